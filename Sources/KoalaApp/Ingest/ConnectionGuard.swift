import HTTPTypes
import KoalaCore
import KoalaDelivery
import KoalaStore
import NIOCore
import NIOHTTPTypes
import Synchronization

/// Limits on what a client may hold on to: time to send a request, and memory for bodies not yet checked.
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
    /// Webhook body bytes held in memory at once across all requests; past it, 503 with `Retry-After`.
    var maxBodyBytesInFlight = 32 << 20

    public init() {}

    public static let section = "koala_router"

    /// Documented in README's configuration table; defaults are the values above.
    public static var settings: [Setting<ConnectionLimits>] {
        /// A deadline, written in seconds.
        func seconds(_ key: String, _ path: WritableKeyPath<ConnectionLimits, TimeAmount>, help: String) -> Setting<ConnectionLimits> {
            Setting(key, help: help, apply: { limits, text throws(SettingProblem) in
                limits[keyPath: path] = .milliseconds(Int64((try Setting<ConnectionLimits>.parse(text, in: 0.1...3600) * 1000).rounded()))
            }, show: { limits in Setting<ConnectionLimits>.format(Double(limits[keyPath: path].nanoseconds) / 1e9) })
        }
        return [
            .integer("max_body_bytes", \.maxBodyBytes, in: 1...(256 << 20), help: "The largest webhook body accepted (413 beyond)"),
            seconds("idle_timeout_s", \.idleTimeout, help: "How long a connection may wait for its next request"),
            seconds("header_timeout_s", \.headerTimeout, help: "How long a request may take from its first byte to the end of its headers"),
            seconds("body_timeout_s", \.bodyTimeout, help: "How long a request's body may take after its headers"),
            .integer("max_connections", \.maxConnections, in: 16...1_000_000, help: "Open connections at once; more wait in the listen backlog"),
            .integer("max_body_bytes_in_flight", \.maxBodyBytesInFlight, in: 1024...(16 << 30),
                     help: "Webhook body bytes held in memory at once; past it, 503 with Retry-After"),
        ]
    }

    public func validate() throws(SettingConflict) {
        if maxBodyBytesInFlight < maxBodyBytes {
            throw SettingConflict(setting: "KOALA_ROUTER_MAX_BODY_BYTES_IN_FLIGHT",
                                  problem: "\(maxBodyBytesInFlight) is below KOALA_ROUTER_MAX_BODY_BYTES (\(maxBodyBytes)): no body of the largest allowed size could ever be read")
        }
    }
}

/// Puts deadlines on each phase of an HTTP/1 connection and closes it when one passes:
/// waiting for a request (`idleTimeout`), receiving its headers (`headerTimeout`, from the request's first
/// byte) and its body (`bodyTimeout`, from the end of the headers). Time spent answering is not limited here
/// (the store and Koala calls carry their own deadlines). It also closes the connection once a response that
/// says `Connection: close` is written, so a refused request's unread body is never drained.
///
/// Sits after Hummingbird's HTTP decoding; a small observer it puts at the front of the pipeline tells it
/// when raw bytes of a new request start to arrive, before any header is complete.
final class ConnectionGuard: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    enum Phase: String { case idle, readingHead = "headers", readingBody = "body", responding }

    private let limits: ConnectionLimits
    private let timedOut: @Sendable (String) -> Void
    private var phase = Phase.idle
    private var deadline: Scheduled<Void>?
    private var closeAfterResponse = false
    private var context: ChannelHandlerContext?

    /// `timedOut` is told the phase (`idle`, `headers`, `body`) whose deadline closed a connection.
    init(limits: ConnectionLimits, timedOut: @escaping @Sendable (String) -> Void = { _ in }) {
        self.limits = limits
        self.timedOut = timedOut
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        try? context.pipeline.syncOperations.addHandler(FirstByteObserver(owner: self), position: .first)
        if context.channel.isActive { enter(.idle) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        deadline?.cancel()
        deadline = nil
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        enter(.idle)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        deadline?.cancel()
        deadline = nil
        context.fireChannelInactive()
    }

    /// Raw bytes arrived (called by the observer, on this channel's event loop).
    fileprivate func bytesArrived() {
        if phase == .idle { enter(.readingHead) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head: enter(.readingBody)
        case .body: break
        case .end: enter(.responding)
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(let response):
            if response.headerFields[.connection]?.lowercased() == "close" { closeAfterResponse = true }
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

    private func enter(_ next: Phase) {
        phase = next
        deadline?.cancel()
        deadline = nil
        guard let context else { return }
        let limit: TimeAmount
        switch next {
        case .idle: limit = limits.idleTimeout
        case .readingHead: limit = limits.headerTimeout
        case .readingBody: limit = limits.bodyTimeout
        case .responding: return
        }
        let loop = context.eventLoop.assumeIsolated()
        deadline = loop.scheduleTask(in: limit) { [weak self] in
            guard let self, let context = self.context else { return }
            self.deadline = nil
            self.timedOut(next.rawValue)
            context.close(promise: nil)
        }
    }
}

/// Tells the guard when bytes arrive, ahead of HTTP decoding.
private final class FirstByteObserver: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    private weak var owner: ConnectionGuard?

    init(owner: ConnectionGuard) {
        self.owner = owner
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        owner?.bytesArrived()
        context.fireChannelRead(data)
    }
}

/// The memory all requests together may hold in unverified bodies.
public final class BodyBudget: Sendable {
    let limit: Int
    private let used = Atomic<Int>(0)

    init(limit: Int) {
        self.limit = limit
    }

    /// Takes `bytes` from the budget; false (and nothing taken) when that would pass the limit.
    func reserve(_ bytes: Int) -> Bool {
        var current = used.load(ordering: .relaxed)
        while true {
            guard bytes <= limit - current else { return false }
            let (exchanged, original) = used.compareExchange(expected: current, desired: current + bytes, ordering: .relaxed)
            if exchanged { return true }
            current = original
        }
    }

    func release(_ bytes: Int) {
        used.subtract(bytes, ordering: .relaxed)
    }

    var inUse: Int { used.load(ordering: .relaxed) }
}
