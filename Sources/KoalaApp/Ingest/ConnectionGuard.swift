import Foundation
import HTTPTypes
public import KoalaCore
import KoalaDelivery
import KoalaStore
import NIOCore
import NIOHTTPTypes
import Synchronization

/// Limits on what a client may hold on to and try: time to send a request, memory for bodies not yet checked,
/// connections, and failed credentials.
public struct ConnectionLimits: Sendable, Equatable, Configurable {
    /// The largest webhook body accepted; larger ones are answered 413 without being read.
    var maxBodyBytes = 1 << 20
    /// How long a connection may wait for its next request (after opening, or after a response).
    var idleTimeout: TimeAmount = .seconds(60)
    /// How long a request may take from its first byte to the end of its headers (slowloris).
    var headerTimeout: TimeAmount = .seconds(30)
    /// How long a request's body may take from the end of its headers (a `Content-Length` that lies, a trickle).
    var bodyTimeout: TimeAmount = .seconds(60)
    /// Open connections beyond this wait in the listen backlog until one closes.
    public var maxConnections = 4096
    /// Connections one client address may hold; more are closed as they open.
    var maxConnectionsPerClient = 256
    /// Webhook body bytes held in memory at once across all requests; past it, 503 with `Retry-After`.
    var maxBodyBytesInFlight = 32 << 20
    /// Webhook body bytes one client address may hold at once (its share of `maxBodyBytesInFlight`).
    var maxBodyBytesInFlightPerClient = 8 << 20
    /// Proxies whose `X-Forwarded-For` names the client; their own connections are not capped per client.
    var trustedProxies: [IPRange] = []
    /// After an answer given before the request's body was read (401, 413, 429 …): how long the connection
    /// keeps reading and discarding what the client still sends, so the client reads the answer instead of a reset.
    var lingeringClose: TimeAmount = .seconds(2)
    /// Wrong admin tokens (admin API, console sign-in) one client may send per minute before 429.
    var adminFailuresPerMinute = 30
    /// Webhooks failing verification one client may send to one source per minute before 429.
    var signatureFailuresPerMinute = 600
    /// How often repeated refusals are summed up in one log line instead of one line each.
    var rejectionLogInterval: TimeInterval = 60

    public init() {}

    package static let section = "koala_router"

    /// Documented in README's configuration table; defaults are the values above.
    package static var settings: [Setting<ConnectionLimits>] {
        /// A deadline, written in seconds.
        func seconds(_ key: String, _ path: WritableKeyPath<ConnectionLimits, TimeAmount>, in range: ClosedRange<Double> = 0.1...3600,
                     help: String) -> Setting<ConnectionLimits> {
            Setting(key, help: help, apply: { limits, text throws(SettingProblem) in
                limits[keyPath: path] = .milliseconds(Int64((try Setting<ConnectionLimits>.parse(text, in: range) * 1000).rounded()))
            }, show: { limits in Setting<ConnectionLimits>.format(Double(limits[keyPath: path].nanoseconds) / 1e9) })
        }
        return [
            .integer("max_body_bytes", \.maxBodyBytes, in: 1...(256 << 20), help: "The largest webhook body accepted (413 beyond)"),
            seconds("idle_timeout_s", \.idleTimeout, help: "How long a connection may wait for its next request"),
            seconds("header_timeout_s", \.headerTimeout, help: "How long a request may take from its first byte to the end of its headers"),
            seconds("body_timeout_s", \.bodyTimeout, help: "How long a request's body may take after its headers"),
            .integer("max_connections", \.maxConnections, in: 16...1_000_000, help: "Open connections at once; more wait in the listen backlog"),
            .integer("max_connections_per_client", \.maxConnectionsPerClient, in: 1...1_000_000,
                     help: "Connections one client address may hold; more are closed as they open"),
            .integer("max_body_bytes_in_flight", \.maxBodyBytesInFlight, in: 1024...(16 << 30),
                     help: "Webhook body bytes held in memory at once; past it, 503 with Retry-After"),
            .integer("max_body_bytes_in_flight_per_client", \.maxBodyBytesInFlightPerClient, in: 1024...(16 << 30),
                     help: "Webhook body bytes one client address may hold at once; past it, 503 with Retry-After"),
            Setting("trusted_proxies", help: "Proxies (addresses or networks, comma-separated) whose X-Forwarded-For names the client",
                    apply: { limits, text throws(SettingProblem) in
                var ranges: [IPRange] = []
                for item in text.split(separator: ",") where !item.allSatisfy(\.isWhitespace) {
                    guard let range = IPRange(String(item)) else {
                        throw SettingProblem("'\(item)' is not an IP address or network such as 10.0.0.0/8 or fd00::/8")
                    }
                    ranges.append(range)
                }
                limits.trustedProxies = ranges
            }, show: { $0.trustedProxies.isEmpty ? "(not set: every client is its peer address)" : $0.trustedProxies.map(\.description).joined(separator: ",") }),
            seconds("lingering_close_s", \.lingeringClose, in: 0...60,
                    help: "After an answer given before the body was read, how long the connection drains what the client still sends"),
            .integer("admin_failures_per_minute", \.adminFailuresPerMinute, in: 1...1_000_000,
                     help: "Wrong admin tokens (admin API, console sign-in) one client may send per minute before 429"),
            .integer("signature_failures_per_minute", \.signatureFailuresPerMinute, in: 1...1_000_000,
                     help: "Webhooks failing verification one client may send to one source per minute before 429"),
            .number("rejection_log_interval_s", \.rejectionLogInterval, in: 0.1...86400,
                    help: "Repeated refusals are logged once, then summed up in one line per interval"),
        ]
    }

    package func validate() throws(SettingConflict) {
        if maxBodyBytesInFlight < maxBodyBytes {
            throw SettingConflict(setting: "KOALA_ROUTER_MAX_BODY_BYTES_IN_FLIGHT",
                                  problem: "\(maxBodyBytesInFlight) is below KOALA_ROUTER_MAX_BODY_BYTES (\(maxBodyBytes)): no body of the largest allowed size could ever be read")
        }
        if maxBodyBytesInFlightPerClient < maxBodyBytes {
            throw SettingConflict(setting: "KOALA_ROUTER_MAX_BODY_BYTES_IN_FLIGHT_PER_CLIENT",
                                  problem: "\(maxBodyBytesInFlightPerClient) is below KOALA_ROUTER_MAX_BODY_BYTES (\(maxBodyBytes)): no client could send a body of the largest allowed size")
        }
        if maxConnectionsPerClient >= maxConnections {
            throw SettingConflict(setting: "KOALA_ROUTER_MAX_CONNECTIONS_PER_CLIENT",
                                  problem: "\(maxConnectionsPerClient) is not below KOALA_ROUTER_MAX_CONNECTIONS (\(maxConnections)): one client could hold every connection")
        }
    }
}

/// Puts deadlines on each phase of an HTTP/1 connection and closes it when one passes:
/// waiting for a request (`idleTimeout`), receiving its headers (`headerTimeout`, from the request's first
/// byte) and its body (`bodyTimeout`, from the end of the headers). Time spent answering is not limited here
/// (the store and Koala calls carry their own deadlines). It also closes the connection once a response that
/// says `Connection: close` is written, so a refused request's unread body is never drained.
///
/// It caps the connections of one client address (`maxConnectionsPerClient`): one more is closed as it opens.
/// And when a connection closes after an answer given before the request's body was read (401, 413, 429 …)
/// it lingers: it stops writing (FIN), keeps reading and discarding for up to `lingeringClose`, and closes when
/// the client does. Closing with unread bytes would send a reset, which can destroy the answer before the
/// client, still sending, has read it.
///
/// Sits after Hummingbird's HTTP decoding; a small observer it puts at the front of the pipeline tells it
/// when raw bytes of a new request start to arrive, before any header is complete, and drops what a lingering
/// connection still receives.
final class ConnectionGuard: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    enum Phase: String { case idle, readingHead = "headers", readingBody = "body", responding, lingering }
    /// The phases whose deadline can close a connection (the `phase` label of the timeouts metric).
    static let phasesWithDeadlines: [Phase] = [.idle, .readingHead, .readingBody]
    /// The `reason` label of a connection closed because its client held its share.
    static let clientCapReason = "client_cap"

    private let limits: ConnectionLimits
    private let clients: ClientConnections?
    private let timedOut: @Sendable (String) -> Void
    private let refusedOverCap: @Sendable () -> Void
    private var phase = Phase.idle
    /// When the current phase's time is up; nil while responding or lingering.
    private var phaseDeadline: NIODeadline?
    /// One timer per connection, never later than `phaseDeadline`. A phase that starts does not re-arm it unless its
    /// deadline is earlier: when the timer fires before the deadline then current, it is armed again for it. A
    /// request on a kept-alive connection thus schedules and cancels nothing (three timers each before).
    private var timer: Scheduled<Void>?
    private var timerDue = NIODeadline.distantFuture
    /// Ends a lingering close.
    private var lingerTimer: Scheduled<Void>?
    private var closeAfterResponse = false
    /// An answer was written before the request's body had all arrived: closing must linger.
    private var answeredEarly = false
    /// The client address counted in `clients`, released when the connection closes.
    private var counted: String?
    private var context: ChannelHandlerContext?
    private var lingerCloses: [EventLoopPromise<Void>] = []

    /// `timedOut` is told the phase (`idle`, `headers`, `body`) whose deadline closed a connection;
    /// `refusedOverCap` each connection closed because its client held `maxConnectionsPerClient`.
    init(limits: ConnectionLimits, clients: ClientConnections? = nil, timedOut: @escaping @Sendable (String) -> Void = { _ in },
         refusedOverCap: @escaping @Sendable () -> Void = {}) {
        self.limits = limits
        self.clients = clients
        self.timedOut = timedOut
        self.refusedOverCap = refusedOverCap
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        try? context.pipeline.syncOperations.addHandler(FirstByteObserver(owner: self), position: .first)
        if context.channel.isActive { opened(context) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        stopTimers()
        release()
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        opened(context)
        context.fireChannelActive()
    }

    /// Counts the connection against its client's cap (closing it when the client already holds the cap), and
    /// starts the idle deadline. Runs once, whichever of handlerAdded and channelActive comes when it is active.
    private func opened(_ context: ChannelHandlerContext) {
        guard phase == .idle, phaseDeadline == nil, counted == nil else { return }
        let peer = context.channel.remoteAddress
        if let clients, !ClientAddress.isTrusted(peer, limits.trustedProxies) {
            let client = ClientAddress(peer: peer, trusted: []).text
            guard clients.opened(client) else {
                refusedOverCap()
                context.close(promise: nil)
                return
            }
            counted = client
        }
        enter(.idle)
    }

    private func release() {
        if let counted { clients?.closed(counted) }
        counted = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        stopTimers()
        release()
        finishLingering()
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // The client finished sending (half-closed): nothing more to drain.
        if phase == .lingering, let event = event as? ChannelEvent, event == .inputClosed {
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// Raw bytes arrived (called by the observer, on this channel's event loop); false while lingering, when
    /// they are to be dropped.
    fileprivate func bytesArrived() -> Bool {
        if phase == .lingering { return false }
        if phase == .idle { enter(.readingHead) }
        return true
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head: enter(.readingBody)
        case .body: break
        case .end: if phase == .readingBody { enter(.responding) }
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(let response):
            if response.headerFields[.connection]?.lowercased() == "close" { closeAfterResponse = true }
            // Answered while the body is still arriving: the connection must not reset on the client.
            if phase == .readingBody || phase == .readingHead { answeredEarly = true }
            context.write(data, promise: promise)
        case .body:
            context.write(data, promise: promise)
        case .end:
            if closeAfterResponse {
                let written = context.eventLoop.makePromise(of: Void.self)
                if let promise { written.futureResult.cascade(to: promise) }
                written.futureResult.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
                context.writeAndFlush(data, promise: written)
                return
            }
            // A pipelined next request may already be under way; otherwise wait for the next one.
            if phase == .responding { enter(.idle) }
            context.write(data, promise: promise)
        }
    }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        guard mode == .all, answeredEarly, limits.lingeringClose.nanoseconds > 0, context.channel.isActive else {
            if phase == .lingering, mode == .all, let promise {
                lingerCloses.append(promise)   // a close asked for while lingering completes when it ends
                return
            }
            context.close(mode: mode, promise: promise)
            return
        }
        if phase == .lingering {
            if let promise { lingerCloses.append(promise) }
            return
        }
        // Lingering close: stop writing (the client sees the answer, then FIN), drain what it still sends,
        // close when it closes or the time is up.
        if let promise { lingerCloses.append(promise) }
        phase = .lingering
        phaseDeadline = nil
        lingerTimer?.cancel()
        lingerTimer = context.eventLoop.assumeIsolated().scheduleTask(in: limits.lingeringClose) { [weak self] in
            guard let self, let context = self.context else { return }
            self.lingerTimer = nil
            self.endLingering(context)
        }
        context.flush()
        context.close(mode: .output, promise: nil)
        context.read()
    }

    /// The client is still sending while the connection lingers: keep reading (and dropping) it.
    fileprivate func lingeringRead() {
        context?.read()
    }

    private func endLingering(_ context: ChannelHandlerContext) {
        phase = .responding
        answeredEarly = false
        context.close(mode: .all, promise: nil)
    }

    private func finishLingering() {
        let promises = lingerCloses
        lingerCloses = []
        for promise in promises { promise.succeed() }
    }

    private func enter(_ next: Phase) {
        guard phase != .lingering else { return }
        phase = next
        if next == .idle { answeredEarly = false }
        let limit: TimeAmount
        switch next {
        case .idle: limit = limits.idleTimeout
        case .readingHead: limit = limits.headerTimeout
        case .readingBody: limit = limits.bodyTimeout
        case .responding, .lingering:
            phaseDeadline = nil
            return
        }
        let due = NIODeadline.now() + limit
        phaseDeadline = due
        if timer == nil || timerDue > due { arm(at: due) }
    }

    private func arm(at due: NIODeadline) {
        guard let context else { return }
        timer?.cancel()
        timerDue = due
        timer = context.eventLoop.assumeIsolated().scheduleTask(deadline: due) { [weak self] in
            self?.timerFired()
        }
    }

    /// Closes the connection if its phase's time is up; otherwise (the phase changed since the timer was armed)
    /// arms it again for the deadline now current.
    private func timerFired() {
        timer = nil
        guard let due = phaseDeadline, let context else { return }
        if due > .now() {
            arm(at: due)
            return
        }
        phaseDeadline = nil
        timedOut(phase.rawValue)
        context.close(promise: nil)
    }

    private func stopTimers() {
        timer?.cancel()
        timer = nil
        lingerTimer?.cancel()
        lingerTimer = nil
        phaseDeadline = nil
    }
}

/// Tells the guard when bytes arrive, ahead of HTTP decoding; drops them while the connection lingers.
private final class FirstByteObserver: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    private weak var owner: ConnectionGuard?

    init(owner: ConnectionGuard) {
        self.owner = owner
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard owner?.bytesArrived() ?? true else {
            owner?.lingeringRead()
            return
        }
        context.fireChannelRead(data)
    }
}
