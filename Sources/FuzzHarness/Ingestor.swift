import Foundation
import HTTPTypes
import KoalaApp
import KoalaCore
import KoalaStore
import Logging

/// The whole ingest path over the shipped routes and a real SQLite store: a fuzzed body, signed for a
/// shipped source as its provider would, through `Ingest.handle`.
public final class Ingestor: Sendable {
    /// Secrets for every shipped source (their variable names), known to the signer.
    public static let environment: [String: String] = [
        "STRIPE_WEBHOOK_SECRET": "whsec_fuzz_stripe", "PADDLE_WEBHOOK_SECRET": "pdl_ntfset_fuzz_paddle", "WORKOS_WEBHOOK_SECRET": "workos_fuzz_secret_0",
        "RECURLY_WEBHOOK_SECRET": "recurly_fuzz_secret_0", "CLERK_WEBHOOK_SECRET": "whsec_" + Base64.encode(Array("fuzz-clerk-signing-key-0123".utf8)),
        "LEMONSQUEEZY_WEBHOOK_SECRET": "lemon_fuzz_secret_0", "CHARGEBEE_WEBHOOK_USERNAME": "koala", "CHARGEBEE_WEBHOOK_PASSWORD": "cb_fuzz_password_0",
        "ACME_WEBHOOK_SECRET": "acme_fuzz_secret_0", "TOKEN_WEBHOOK_SECRET": "tok_fuzz_secret_000",
    ]

    let ingest: Ingest
    let store: SQLiteStore
    let table: RuleTable

    public init(directory: String) async throws {
        table = try RuleLoader(environment: Self.environment).load(directory: FuzzHarness.repositoryRoot + "/routes")
        let store = try await SQLiteStore(path: directory + "/fuzz.sqlite")
        self.store = store
        // libFuzzer calls a synchronous entry point for each input, so the store runs for the whole process,
        // beside the fuzzing loop rather than inside a scope.
        Task { try await store.run() }
        ingest = Ingest(rules: RulesHolder(table), store: store, linger: 3600, logger: Logger(label: "fuzz", factory: { _ in SwiftLogNoOpLogHandler() }))
    }

    public var sources: [String] { table.sources.keys.sorted() }

    /// First line: a shipped source's name; the rest: the body. The answer must be 200 or 400 (never 401: the
    /// harness signs correctly; never 503: no payload may break the store); an accepted webhook must read back
    /// byte for byte, and each message it queued must be well-formed JSON with a message id and a time.
    public func run(_ bytes: [UInt8]) async -> String? {
        let newline = bytes.firstIndex(of: 0x0A) ?? bytes.endIndex
        let name = String(decoding: bytes[..<newline], as: UTF8.self)
        let sources = self.sources
        let sourceName = table.sources[name] != nil ? name : sources[bytes.count % sources.count]
        guard let source = table.sources[sourceName] else { return "no source" }
        let body = newline < bytes.endIndex ? Array(bytes[(newline + 1)...]) : []
        let now = Date()
        let key: [UInt8]
        switch source.scheme {
        case "standard-webhooks": key = StandardWebhooksVerifier.decodeSecret(Self.environment["CLERK_WEBHOOK_SECRET"] ?? "") ?? []
        case "basic-auth": key = Array((Self.environment["CHARGEBEE_WEBHOOK_PASSWORD"] ?? "").utf8)
        default: key = Array((Self.environment[sourceName.uppercased() + "_WEBHOOK_SECRET"] ?? "").utf8)
        }
        let id = "msg_" + Hex.encode(Array(Crypto.digest(.sha256, body).prefix(12)))
        var headers: HTTPFields = [.contentType: "application/json"]
        for (field, value) in FuzzSigner.headers(scheme: source.scheme, key: key, body: body, now: now, id: id) {
            headers.append(HTTPField(name: HTTPField.Name(field)!, value: value))
        }
        let answer = await ingest.handle(source: sourceName, headers: headers, body: body, now: now)
        switch answer.status.code {
        case 400:
            return nil
        case 200:
            guard answer.body["status"] == "accepted", let webhookID = answer.body["webhook_id"]?.stringValue else { return nil }
            do {
                guard let stored = try await store.storedWebhook(source: sourceName, webhookID: webhookID) else {
                    return "\(sourceName): accepted webhook \(LogText.escaped(webhookID)) cannot be read back"
                }
                if stored.body != body { return "\(sourceName): the stored body differs from the one received" }
                if stored.webhookID != webhookID { return "\(sourceName): the stored id differs: \(LogText.escaped(stored.webhookID))" }
                for message in try await store.storedMessages(source: sourceName, webhookID: webhookID, destination: .koala).values {
                    guard let item = try? JSONValue.parse(Array(message.itemJSON.utf8)) else { return "\(sourceName): a stored message is not JSON" }
                    guard item["message_id"]?.stringValue == message.messageID else { return "\(sourceName): a message has no message_id" }
                    guard let sentAt = item["sent_at"]?.stringValue, Timestamps.parseISO(sentAt) != nil else {
                        return "\(sourceName): a message has no valid sent_at"
                    }
                }
            } catch {
                return "\(sourceName): reading back failed: \(error)"
            }
            return nil
        default:
            return "\(sourceName): answered \(answer.status.code) \(answer.body.encoded()) to a correctly signed webhook"
        }
    }
}
