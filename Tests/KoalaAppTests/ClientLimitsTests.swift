import Foundation
import HTTPTypes
import Logging
import NIOCore
import Testing
@testable import KoalaApp
import KoalaTestSupport

/// The per-client limits on their own: who a client is, its share of the body budget, its failure bucket.
@Suite("Per-client limits")
struct ClientLimitsTests {
    @Test func ipRangesMatchTheirAddresses() throws {
        let ten = try #require(IPRange("10.0.0.0/8"))
        func bytes(_ text: String) throws -> [UInt8] { try #require(IPRange.bytes(text), "\(text)") }
        #expect(ten.contains(try bytes("10.200.3.4")))
        #expect(!ten.contains(try bytes("11.0.0.1")))
        #expect(ten.contains(try bytes("::ffff:10.1.2.3")), "an IPv4 address written as IPv6 is that address")
        let one = try #require(IPRange("192.168.1.7"))
        let seven = try bytes("192.168.1.7"), eight = try bytes("192.168.1.8")
        #expect(one.prefix == 32 && one.contains(seven) && !one.contains(eight))
        let v6 = try #require(IPRange("fd00::/8"))
        let private6 = try bytes("fd12:3456::1"), link6 = try bytes("fe80::1")
        #expect(v6.contains(private6) && !v6.contains(link6))
        let twelve = try #require(IPRange("172.16.0.0/12"))
        let inside = try #require(IPRange.bytes("172.31.255.255")), outside = try #require(IPRange.bytes("172.32.0.0"))
        #expect(twelve.contains(inside) && !twelve.contains(outside))
        for bad in ["10.0.0.0/33", "fd00::/129", "not-an-ip", "10.0.0/8", "", "10.0.0.0/-1"] {
            #expect(IPRange(bad) == nil, "\(bad)")
        }
    }

    @Test func theClientIsThePeerUnlessATrustedProxyNamesIt() throws {
        let proxy = try SocketAddress(ipAddress: "10.0.0.5", port: 4000)
        let stranger = try SocketAddress(ipAddress: "203.0.113.9", port: 4000)
        let trusted = [try #require(IPRange("10.0.0.0/8"))]
        var headers = HTTPFields()
        headers[HTTPField.Name("X-Forwarded-For")!] = "1.2.3.4, 198.51.100.7, 10.0.0.9"
        // Through the trusted proxies: the right-most address that is not one of them (1.2.3.4 could be forged).
        #expect(ClientAddress(peer: proxy, headers: headers, trusted: trusted).text == "198.51.100.7")
        // From anyone else, X-Forwarded-For is the client's own claim: ignored.
        #expect(ClientAddress(peer: stranger, headers: headers, trusted: trusted).text == "203.0.113.9")
        #expect(ClientAddress(peer: proxy, headers: headers, trusted: []).text == "10.0.0.5")
        // Garbage in the header stops the walk at the last address known.
        headers[HTTPField.Name("X-Forwarded-For")!] = "<script>, 10.0.0.9"
        #expect(ClientAddress(peer: proxy, headers: headers, trusted: trusted).text == "10.0.0.9")
        #expect(ClientAddress.isTrusted(proxy, trusted) && !ClientAddress.isTrusted(stranger, trusted))
        #expect(ClientAddress(peer: nil, trusted: trusted) == .unknown)
    }

    @Test func eachClientHoldsAtMostItsShareOfTheBodyBudget() {
        let budget = BodyBudget(limit: 100, perClient: 40)
        #expect(budget.reserve(40, client: "a") == nil)
        #expect(budget.reserve(1, client: "a") == .clientShare)
        #expect(budget.reserve(40, client: "b") == nil)
        #expect(budget.reserve(30, client: "c") == .full, "the whole budget is 100")
        #expect(budget.reserve(20, client: "c") == nil)
        budget.release(40, client: "a")
        #expect(budget.reserve(40, client: "a") == nil)
        #expect(budget.inUse == 100)
        let connections = ClientConnections(limit: 2)
        #expect(connections.opened("x") && connections.opened("x") && !connections.opened("x") && connections.opened("y"))
        connections.closed("x")
        #expect(connections.count("x") == 1 && connections.opened("x"))
    }

    @Test func failuresAreLimitedPerClientAndRefill() {
        let limiter = FailureLimiter(perMinute: 3)
        let start = Date(timeIntervalSince1970: 1_000_000)
        #expect(limiter.retryAfter("a", now: start) == nil)
        for _ in 0..<3 { limiter.failed("a", now: start) }
        #expect(limiter.retryAfter("a", now: start) == 20, "one failure back every 20 s")
        #expect(limiter.retryAfter("b", now: start) == nil, "another client is not affected")
        #expect(limiter.retryAfter("a", now: start.addingTimeInterval(19)) == 1)
        #expect(limiter.retryAfter("a", now: start.addingTimeInterval(20)) == nil)
        limiter.failed("a", now: start.addingTimeInterval(20))
        #expect(limiter.retryAfter("a", now: start.addingTimeInterval(20)) != nil)
    }

    @Test func refusalsAreLoggedOnceThenSummedUp() {
        let capture = CapturingLogHandler()
        let log = RejectionLog(interval: 60, logger: Logger(label: "t") { _ in capture })
        for i in 0..<500 {
            log.warning("webhook rejected", key: "stripe|signature_mismatch", client: ClientAddress(text: "10.0.0.\(i % 3)"),
                        metadata: ["source": "stripe"])
        }
        log.warning("webhook rejected", key: "paddle|signature_mismatch", client: ClientAddress(text: "10.0.0.1"), metadata: ["source": "paddle"])
        #expect(capture.lines.count == 2)
        log.flush()
        let lines = capture.lines
        #expect(lines.count == 3, "\(lines)")
        #expect(lines.last?.contains("webhook rejected: 499 more in the last 60 s, not logged one by one") == true, "\(lines)")
        #expect(lines.last?.contains("clients=3") == true, "\(lines)")
        log.flush()
        #expect(capture.lines.count == 3, "nothing new: no summary")
    }
}
