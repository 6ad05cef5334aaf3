import Dispatch
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A plain TCP connection to the router on loopback, for what an HTTP client library will not send:
/// slow headers, lying framing, raw paths, idle keep-alive connections.
final class RawConnection: @unchecked Sendable {
    let fd: Int32

    /// Connects to 127.0.0.1:`port`, from `source` when given (any 127.x.y.z is this machine: a second client
    /// address for per-client limits); nil if the connection is refused.
    init?(port: Int, from source: String? = nil) {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return nil }
        if let source {
            var local = sockaddr_in()
            local.sin_family = sa_family_t(AF_INET)
            local.sin_addr.s_addr = inet_addr(source)
            let bound = withUnsafePointer(to: &local) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard bound == 0 else {
                close(fd)
                return nil
            }
        }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            close(fd)
            return nil
        }
    }

    deinit { close(fd) }

    /// Ends the connection in both directions now (the router sees it closed), whoever still holds this object.
    func hangUp() {
        _ = Glibc.shutdown(fd, Int32(SHUT_RDWR))
    }

    /// Sends all of `bytes`; false once the peer has closed the connection.
    @discardableResult
    func send(_ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return false }
            offset += n
        }
        return true
    }

    @discardableResult
    func send(_ text: String) -> Bool { send(Array(text.utf8)) }

    enum Read: Equatable {
        case data([UInt8])
        /// The peer closed (or reset) the connection.
        case closed
        case timedOut
    }

    /// Waits up to `timeout` seconds for bytes.
    func read(timeout: Double) -> Read {
        var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let ready = poll(&poller, 1, Int32(timeout * 1000))
        guard ready > 0 else { return .timedOut }
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        let n = recv(fd, &buffer, buffer.count, 0)
        return n > 0 ? .data(Array(buffer[0..<n])) : .closed
    }

    /// Everything the router answers until it closes the connection or `timeout` passes.
    func response(timeout: Double) -> (text: String, closed: Bool) {
        var bytes: [UInt8] = []
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            switch read(timeout: max(0.01, deadline.timeIntervalSinceNow)) {
            case .data(let chunk): bytes += chunk
            case .closed: return (String(decoding: bytes, as: UTF8.self), true)
            case .timedOut: return (String(decoding: bytes, as: UTF8.self), false)
            }
        }
        return (String(decoding: bytes, as: UTF8.self), false)
    }

    /// Seconds until the router closes the connection, reading and discarding whatever it sends; nil if it
    /// is still open after `timeout`.
    func secondsUntilClosed(timeout: Double) -> Double? {
        let start = Date()
        while Date().timeIntervalSince(start) < timeout {
            switch read(timeout: timeout - Date().timeIntervalSince(start)) {
            case .data: continue
            case .closed: return Date().timeIntervalSince(start)
            case .timedOut: return nil
            }
        }
        return nil
    }

    /// The status code of the first response line in `text`.
    static func status(_ text: String) -> Int? {
        guard text.hasPrefix("HTTP/1.1 ") else { return nil }
        return Int(text.dropFirst(9).prefix(3))
    }
}

/// The process's resident memory in bytes (from /proc), for memory bounds in hostile-input tests.
func residentBytes(pid: Int32) -> Int? {
    guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
          let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }) else { return nil }
    let kilobytes = line.split(separator: " ").compactMap { Int($0) }.first
    return kilobytes.map { $0 * 1024 }
}

/// Raises this process's open-file limit to its hard limit (tests that hold a thousand connections).
func raiseOpenFileLimit() {
    var limit = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max else { return }
    limit.rlim_cur = limit.rlim_max
    _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
}

extension RawConnection {
    /// One request on a fresh connection (`Connection: close`), read until the router closes it. Used
    /// where an HTTP client library would get in the way: answers that come before the body is sent.
    static func exchange(port: Int, method: String = "GET", path: String, headers: [(String, String)] = [], body: [UInt8] = [],
                         timeout: Double = 10, from source: String? = nil) -> (status: Int, body: String)? {
        guard let connection = RawConnection(port: port, from: source) else { return nil }
        var head = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        for (name, value) in headers { head += "\(name): \(value)\r\n" }
        if method != "GET" || !body.isEmpty { head += "Content-Length: \(body.count)\r\n" }
        connection.send(head + "\r\n")
        connection.send(body)
        let text = connection.response(timeout: timeout).text
        guard let status = status(text) else { return nil }
        let payload = text.range(of: "\r\n\r\n").map { String(text[$0.upperBound...]) } ?? ""
        return (status, payload)
    }
}

extension RawConnection {
    /// `exchange`, on a thread of its own (see `offPool`).
    static func request(port: Int, method: String = "GET", path: String, headers: [(String, String)] = [], body: [UInt8] = [],
                        timeout: Double = 10, from source: String? = nil) async -> (status: Int, body: String)? {
        (try? await offPool { exchange(port: port, method: method, path: path, headers: headers, body: body, timeout: timeout, from: source) }) ?? nil
    }
}

/// Runs blocking socket work (RawConnection's sends, reads and waits) on a thread of GCD's, never on the test
/// process's cooperative pool: that pool has one thread per core (two here), and a test holding one for seconds
/// starved every other test's awaits, so database start-ups in parallel suites missed their deadlines.
func offPool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        DispatchQueue.global().async { continuation.resume(with: Result { try body() }) }
    }
}
