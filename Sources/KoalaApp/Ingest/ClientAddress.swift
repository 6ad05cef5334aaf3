import Foundation
import HTTPTypes
import NIOCore

/// An IP address or network (`10.0.0.0/8`, `192.168.1.7`, `fd00::/8`, `::1`): the proxies whose
/// `X-Forwarded-For` is believed (`KOALA_ROUTER_TRUSTED_PROXIES`).
struct IPRange: Sendable, Equatable, CustomStringConvertible {
    /// The network's address bytes (4 or 16).
    let bytes: [UInt8]
    /// How many leading bits must match.
    let prefix: Int

    /// Parses `address` or `address/prefix`; nil when either is not valid.
    init?(_ text: String) {
        let parts = text.trimmingCharacters(in: .whitespaces).split(separator: "/", maxSplits: 1)
        guard let first = parts.first, let bytes = IPRange.bytes(String(first)) else { return nil }
        let prefix: Int
        if parts.count == 2 {
            guard let p = Int(parts[1]), (0...(bytes.count * 8)).contains(p) else { return nil }
            prefix = p
        } else {
            prefix = bytes.count * 8
        }
        self.bytes = bytes
        self.prefix = prefix
    }

    var description: String { "\(IPRange.text(bytes))/\(prefix)" }

    /// Whether the address (its bytes) is inside this range.
    func contains(_ address: [UInt8]) -> Bool {
        guard address.count == bytes.count else { return false }
        var left = prefix
        for index in bytes.indices where left > 0 {
            let bits = min(8, left)
            let mask: UInt8 = bits == 8 ? 0xFF : ~(0xFF >> UInt8(bits))
            if (address[index] & mask) != (bytes[index] & mask) { return false }
            left -= bits
        }
        return true
    }

    /// The bytes of an IPv4 or IPv6 address written as text; nil when it is neither. An IPv4 address written as
    /// IPv6 (`::ffff:10.0.0.1`) is its IPv4 bytes.
    static func bytes(_ text: String) -> [UInt8]? {
        guard let address = try? SocketAddress(ipAddress: text, port: 0) else { return nil }
        return bytes(address)
    }

    static func bytes(_ address: SocketAddress) -> [UInt8]? {
        switch address {
        case .v4(let v4):
            return withUnsafeBytes(of: v4.address.sin_addr) { Array($0) }
        case .v6(let v6):
            let all = withUnsafeBytes(of: v6.address.sin6_addr) { Array($0) }
            if all[0..<10].allSatisfy({ $0 == 0 }) && all[10] == 0xFF && all[11] == 0xFF { return Array(all[12...]) }
            return all
        case .unixDomainSocket:
            return nil
        }
    }

    /// An address's canonical text (dotted IPv4, or lower-case hex groups for IPv6).
    static func text(_ bytes: [UInt8]) -> String {
        if bytes.count == 4 { return bytes.map(String.init).joined(separator: ".") }
        return stride(from: 0, to: bytes.count, by: 2).map { String(UInt16(bytes[$0]) << 8 | UInt16(bytes[$0 + 1]), radix: 16) }.joined(separator: ":")
    }
}

/// Who a request comes from, for per-client limits: the peer's address, or, when the peer is a trusted proxy,
/// the right-most address in `X-Forwarded-For` that is not itself a trusted proxy (what a chain of proxies
/// appended; anything left of it the client could have written).
struct ClientAddress: Sendable, Hashable, CustomStringConvertible {
    /// The address's canonical text (unix-socket and unknown peers share one name).
    let text: String

    static let unknown = ClientAddress(text: "unknown")

    init(text: String) {
        self.text = text
    }

    init(peer: SocketAddress?, headers: HTTPFields? = nil, trusted: [IPRange]) {
        guard let peer, let bytes = IPRange.bytes(peer) else {
            self = .unknown
            return
        }
        var client = bytes
        if !trusted.isEmpty, trusted.contains(where: { $0.contains(bytes) }), let forwarded = headers?[values: HTTPField.Name("X-Forwarded-For")!] {
            let hops = forwarded.flatMap { $0.split(separator: ",") }.map { $0.trimmingCharacters(in: .whitespaces) }
            for hop in hops.reversed() {
                guard let hopBytes = IPRange.bytes(hop) else { break }   // unreadable: stop at the last address we know
                client = hopBytes
                if !trusted.contains(where: { $0.contains(hopBytes) }) { break }
            }
        }
        text = IPRange.text(client)
    }

    /// Whether the peer itself is a trusted proxy (whose many connections are its clients').
    static func isTrusted(_ peer: SocketAddress?, _ trusted: [IPRange]) -> Bool {
        guard !trusted.isEmpty, let peer, let bytes = IPRange.bytes(peer) else { return false }
        return trusted.contains { $0.contains(bytes) }
    }

    var description: String { text }
}
