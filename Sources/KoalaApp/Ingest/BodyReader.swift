import AsyncHTTPClient
import Foundation
import HTTPTypes
import Hummingbird
import KoalaCore
import KoalaDelivery
import KoalaStore
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle

/// The largest unread request body discarded to keep a connection alive after a refusal.
let unreadBodyKeptAlive = 64 * 1024

/// A webhook body read within the size limit and the memory budget; its bytes go back to the budget on `release`.
enum BodyRead {
    case body([UInt8], reserved: Int)
    case tooLarge
    case overBudget(BodyBudget.Refusal)
}

/// Reads a request body up to `limit` bytes, taking each chunk from `budget` (for `client`) as it arrives. A
/// declared length over the limit is refused before any byte is read; otherwise nothing is reserved for what a
/// `Content-Length` only promises.
func readBody(_ body: RequestBody, declaredLength: Int?, limit: Int, budget: BodyBudget, client: String) async throws -> BodyRead {
    if let declaredLength, declaredLength > limit { return .tooLarge }
    var reserved = 0
    var bytes: [UInt8] = []
    // Room for the usual webhook at once; a larger body grows the array as it arrives, not as it is announced.
    bytes.reserveCapacity(min(declaredLength ?? 16 * 1024, 64 * 1024))
    do {
        for try await chunk in body {
            guard bytes.count + chunk.readableBytes <= limit else {
                budget.release(reserved, client: client)
                return .tooLarge
            }
            if let refusal = budget.reserve(chunk.readableBytes, client: client) {
                budget.release(reserved, client: client)
                return .overBudget(refusal)
            }
            reserved += chunk.readableBytes
            bytes.append(contentsOf: chunk.readableBytesView)
        }
    } catch {
        budget.release(reserved, client: client)
        throw error
    }
    return .body(bytes, reserved: reserved)
}
