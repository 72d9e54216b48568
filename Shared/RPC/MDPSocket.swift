import Foundation
import ZMQ

extension ZMQSocket {
    /// Sends one frame of an MDP message as `MDP`'s `emit…` functions give it (a string's
    /// UTF-8 straight from its storage): `more` on every frame but the last.
    @inline(__always)
    public func sendFrame(_ frame: MDP.Frame, more: Bool) throws(ZMQError) {
        switch frame {
        case .data(let d): try sendFrame(d, more: more)
        case .utf8(let s): try sendFrame(utf8: s, more: more)
        }
    }
}
