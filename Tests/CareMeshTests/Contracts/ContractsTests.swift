import CareMeshContracts
import CareMeshRPC
import CareMeshTesting
import Foundation
import Testing

/// The contracts: generated code is fresh, names come from the protos, codes map right.
@Suite struct ContractsTests {
    /// FNV-1a 64 over proto/ exactly as scripts/generate-methods.py computes it.
    static func fingerprint(_ dir: URL) throws -> String {
        let fm = FileManager.default
        var paths = (fm.enumerator(atPath: dir.path)?.allObjects as? [String] ?? []).filter { $0.hasSuffix(".proto") }
        paths.sort { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
        var h: UInt64 = 0xcbf29ce484222325
        for p in paths {
            let bytes = Array(p.utf8) + [0] + Array(try Data(contentsOf: dir.appendingPathComponent(p))) + [0]
            for b in bytes { h = (h ^ UInt64(b)) &* 0x100000001b3 }
        }
        let hex = String(h, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }

    @Test("the generated Swift is up to date with proto/ (else run scripts/generate-protos.sh)")
    func generatedCodeIsFresh() throws {
        let proto = TestStack.packageRoot.appendingPathComponent("proto")
        #expect(try Self.fingerprint(proto) == protoFingerprint,
                "proto/ changed since the Swift was generated: run scripts/generate-protos.sh and commit")
    }

    @Test("method names are the proto's full /package.Service/Method, with idempotency from the options")
    func methodDescriptors() throws {
        #expect(HealthMethods.check.path == "/caremesh.health.v1.Health/Check")
        #expect(HealthMethods.check.idempotency == .noSideEffects)
        #expect(BenchMethods.write.idempotency == .unknown)
        #expect(BenchMethods.echo.serviceName == "bench")
        #expect(AnyRPCMethod.find("Health/Check")?.path == HealthMethods.check.path)
        #expect(AnyRPCMethod.find("Check")?.path == HealthMethods.check.path)
        #expect(AnyRPCMethod.find("/nope.Service/Nope") == nil)
        for s in [IdentityMethods.serviceName, DispatchMethods.serviceName, AlertsMethods.serviceName, MessagingMethods.serviceName] {
            #expect(s != nil)
        }
    }

    @Test("the 17 canonical codes with their numbers, names and HTTP statuses")
    func statusCodes() {
        #expect(StatusCode.allCases.count == 17)
        #expect(StatusCode.allCases.map(\.rawValue) == Array(0...16))
        #expect(StatusCode.unauthenticated.name == "UNAUTHENTICATED")
        let http: [(StatusCode, Int)] = [(.notFound, 404), (.invalidArgument, 400), (.unauthenticated, 401),
                                         (.permissionDenied, 403), (.alreadyExists, 409), (.aborted, 409),
                                         (.resourceExhausted, 429), (.unavailable, 503), (.deadlineExceeded, 504),
                                         (.unimplemented, 501), (.internal, 500), (.ok, 200)]
        for (code, status) in http { #expect(code.httpStatus == status, "\(code.name)") }
    }

    @Test("INVALID_ARGUMENT names the field; JSON mapping round-trips")
    func errorsAndJSON() throws {
        let e = RPCError.invalidArgument(field: "location.latitude", "must be between -90 and 90")
        #expect(e.code == .invalidArgument)
        guard case .badRequest(let b)? = e.details.first?.kind else { Issue.record("no BadRequest"); return }
        #expect(b.fieldViolations.first?.field == "location.latitude")
        let json = try Caremesh_Health_V1_HealthCheckResponse(jsonString: #"{"status":"SERVING","instanceId":"x"}"#)
        #expect(json.status == .serving)
        #expect(try json.jsonString() == #"{"status":"SERVING","instanceId":"x"}"#)
    }
}
