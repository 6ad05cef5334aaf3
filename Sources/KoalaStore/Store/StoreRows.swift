import Foundation
import KoalaCore

/// A result row of either database, read by column name. The values the stores return are decoded from it here,
/// once for both backends, so SQLite and PostgreSQL cannot drift in how a row becomes a message or a dead letter.
/// A column that is missing or NULL reads as nil; a text that names no known case reads as the fallback the
/// decoder states.
protocol StoreRow {
    func text(_ column: String) throws -> String?
    func integer(_ column: String) throws -> Int64?
    func real(_ column: String) throws -> Double?
}

extension StoreRow {
    func text(_ column: String, or fallback: String) throws -> String { try text(column) ?? fallback }
    func integer(_ column: String, or fallback: Int64) throws -> Int64 { try integer(column) ?? fallback }
    func date(_ column: String) throws -> Date? { try real(column).map { Date(timeIntervalSince1970: $0) } }
    func date(_ column: String, or fallback: Date) throws -> Date { try date(column) ?? fallback }
    func count(_ column: String) throws -> Int { Int(clamping: try integer(column) ?? 0) }
    func status(_ column: String = "status") throws -> OutboxStatus { try integer(column).flatMap(OutboxStatus.init(rawValue:)) ?? .pending }
    func endpoint() throws -> KoalaEndpoint { try text("endpoint").flatMap(KoalaEndpoint.init(rawValue:)) ?? .person }
    func destination() throws -> Destination { try text("destination").flatMap(Destination.init(rawValue:)) ?? .koala }

    /// The identity columns (`email`, `profile_id`, `domain`, `account_id`, and `user_id` when selected).
    func identity(userID: Bool = true) throws -> KoalaIdentity {
        KoalaIdentity(email: try text("email"), profileID: try text("profile_id"), domain: try text("domain"),
                      accountID: try text("account_id"), userID: userID ? try text("user_id") : nil)
    }
}

extension OutboxMessage {
    /// An outbox row as the sender claims it; `destination` is the claimer's.
    init(row: some StoreRow, destination: Destination) throws {
        self.init(seq: try row.integer("seq", or: 0), messageID: try row.text("message_id", or: ""), source: try row.text("source", or: ""),
                  route: try row.text("route", or: ""), endpoint: try row.endpoint(),
                  kind: try row.text("kind").flatMap(KoalaMessage.Kind.init(rawValue:)) ?? .track,
                  identity: try row.identity(), itemJSON: try row.text("item", or: ""),
                  eventTime: try row.date("event_time", or: Date(timeIntervalSince1970: 0)),
                  createdAt: try row.date("created_at", or: Date(timeIntervalSince1970: 0)), attempts: try row.count("attempts"))
        self.destination = destination
        webhookID = try row.text("webhook_id", or: "")
    }
}

extension DeadLetter {
    /// The columns `init(row:)` reads.
    static let columns = """
        seq, message_id, destination, source, webhook_id, route, output, endpoint, email, profile_id, domain, account_id,
        dead_reason, dead_detail, item, finished_at, attempts, created_at
        """

    init(row: some StoreRow) throws {
        self.init(seq: try row.integer("seq", or: 0), messageID: try row.text("message_id", or: ""), source: try row.text("source", or: ""),
                  webhookID: try row.text("webhook_id", or: ""), route: try row.text("route", or: ""),
                  reason: try row.text("dead_reason", or: ""), detail: try row.text("dead_detail"), itemJSON: try row.text("item", or: ""),
                  failedAt: try row.date("finished_at", or: Date(timeIntervalSince1970: 0)))
        output = try row.text("output").flatMap(KoalaMessage.Output.init(rawValue:))
        destination = try row.destination()
        endpoint = try row.endpoint()
        identity = try row.identity(userID: false)
        attempts = try row.count("attempts")
        createdAt = try row.date("created_at", or: Date(timeIntervalSince1970: 0))
    }
}

extension MessageRecord {
    init(row: some StoreRow) throws {
        self.init(destination: try row.destination(), messageID: try row.text("message_id", or: ""), route: try row.text("route", or: ""),
                  endpoint: try row.endpoint(), state: try row.status(), attempts: try row.count("attempts"),
                  lastError: try row.text("last_error"), deadReason: try row.text("dead_reason"), deadDetail: try row.text("dead_detail"),
                  nextAttemptAt: try row.date("next_attempt_at"), finishedAt: try row.date("finished_at"))
    }
}
