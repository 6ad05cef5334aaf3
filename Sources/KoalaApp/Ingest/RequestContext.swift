import AsyncHTTPClient
import Foundation
import HTTPTypes
package import Hummingbird
import KoalaCore
import KoalaDelivery
import KoalaStore
import Logging
package import NIOCore
import NIOPosix
import ServiceLifecycle

/// The per-client limits of the HTTP listener, shared by every connection and route.
struct ClientGuards: Sendable {
    let limits: ConnectionLimits
    let connections: ClientConnections
    let bodies: BodyBudget
    /// Wrong admin tokens per client (the admin API, the console's sign-in, /readyz details).
    let adminFailures: FailureLimiter
    /// Webhooks failing verification per client and source.
    let signatureFailures: FailureLimiter
    let rejections: RejectionLog

    init(limits: ConnectionLimits, logger: Logger) {
        self.limits = limits
        connections = ClientConnections(limit: limits.maxConnectionsPerClient)
        bodies = BodyBudget(limit: limits.maxBodyBytesInFlight, perClient: limits.maxBodyBytesInFlightPerClient)
        adminFailures = FailureLimiter(perMinute: limits.adminFailuresPerMinute)
        signatureFailures = FailureLimiter(perMinute: limits.signatureFailuresPerMinute)
        rejections = RejectionLog(interval: limits.rejectionLogInterval, logger: logger)
    }

    /// Who sent `request`: its peer, or the client a trusted proxy names.
    func client(_ request: Request, _ context: RouterRequestContext) -> ClientAddress {
        ClientAddress(peer: context.remoteAddress, headers: request.headers, trusted: limits.trustedProxies)
    }

    /// 429 for a client that has failed too often, with when to try again.
    static func tooMany(_ what: String, retryAfter: Int, close: Bool = false) -> Response {
        jsonResponse(.tooManyRequests, ["error": .string("too many \(what) from this client; retry in \(retryAfter) s")],
                     close: close, retryAfter: retryAfter)
    }
}

/// The request context of every route: Hummingbird's, and the peer's address for per-client limits.
package struct RouterRequestContext: RequestContext, RemoteAddressRequestContext {
    /// Hummingbird's own part of the context.
    package var coreContext: CoreRequestContextStorage
    /// The connection's peer (a proxy, when one is in front).
    package let remoteAddress: SocketAddress?
    /// The event loop of the request's connection: ingest continues there after the store's commit.
    package let eventLoop: any EventLoop

    /// The context of a request arriving on `source.channel`.
    package init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        remoteAddress = source.channel.remoteAddress
        eventLoop = source.channel.eventLoop
    }
}
