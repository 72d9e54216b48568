import CareMeshContracts
import Foundation

/// The checks every service applies to ids and phone numbers, each naming the field it guards.
extension FieldViolations {
    /// `text` as a UUID; a violation of `field` when it is not one.
    public mutating func uuid(_ text: String, _ field: String) -> UUID? {
        let id = UUID(uuidString: text)
        check(id != nil, field, "must be a UUID")
        return id
    }

    /// Empty is nil (not given); anything else must be a UUID.
    public mutating func optionalUUID(_ text: String, _ field: String) -> UUID? {
        text.isEmpty ? nil : uuid(text, field)
    }

    /// Why PHI is touched, as stored in audit trails; a violation of `field` (naming the allowed
    /// values) when no purpose is given.
    public mutating func purpose(_ p: Caremesh_Identity_V1_AccessPurpose, _ field: String = "purpose") -> String? {
        guard let name = p.storedName else {
            add(field, "say why the record is touched: TREATMENT, EMERGENCY, CARE_COORDINATION, PERSON_REQUEST, OPERATIONS or COMPLIANCE")
            return nil
        }
        return name
    }

    /// An E.164 phone number (required unless `required` is false, then empty is allowed).
    public mutating func phone(_ text: String, _ field: String, required: Bool = true) {
        if text.isEmpty {
            if required { add(field, "is required (E.164, e.g. +33612345678)") }
        } else if !Self.isE164(text) {
            add(field, "must be an E.164 number, e.g. +33612345678")
        }
    }

    /// E.164: "+", a country code not starting with 0, 7 to 15 digits in all.
    public static func isE164(_ s: String) -> Bool {
        let u = Array(s.utf8)
        guard u.count >= 8, u.count <= 16, u[0] == UInt8(ascii: "+"), u[1] != UInt8(ascii: "0") else { return false }
        return u.dropFirst().allSatisfy { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }
    }
}
