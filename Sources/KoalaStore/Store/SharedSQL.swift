import Foundation
import KoalaCore

/// A value bound to a statement of either database.
enum SQLValue: Sendable, Equatable {
    case text(String?)
    case integer(Int64)
    case real(Double)
    /// A list, bound as one array (PostgreSQL only: SQLite's dialect binds each element instead).
    case texts([String])
}

/// Where SQLite's and PostgreSQL's SQL differ, for the statements both stores build from one text.
struct SQLDialect: Sendable {
    /// The `n`th (1-based) parameter: `?` or `$n`.
    let placeholder: @Sendable (Int) -> String
    /// Whether a list binds as one array (`= ANY($n)`) rather than one parameter per element (`IN (?, ?)`).
    let bindsArrays: Bool
    /// The position function: `instr` (SQLite) or `strpos` (PostgreSQL).
    let position: String
    /// A `bytea`/`BLOB` column read as text: `CAST(body AS TEXT)` or `encode(body, 'escape')` (which keeps ASCII as
    /// is, all an address needs to be found).
    let bytesAsText: @Sendable (String) -> String
    /// What else a cleared lease resets: PostgreSQL also records who held it.
    let leaseOwnerReset: String

    static let sqlite = SQLDialect(placeholder: { _ in "?" }, bindsArrays: false, position: "instr",
                                   bytesAsText: { "CAST(\($0) AS TEXT)" }, leaseOwnerReset: "")
    static let postgres = SQLDialect(placeholder: { "$\($0)" }, bindsArrays: true, position: "strpos",
                                     bytesAsText: { "encode(\($0), 'escape')" }, leaseOwnerReset: ", lease_owner = NULL")
}

/// A statement's text and values, built once for both databases; each store turns the values into its own binds.
struct SQLStatement: Sendable {
    let dialect: SQLDialect
    var text = ""
    private(set) var values: [SQLValue] = []

    init(_ dialect: SQLDialect, _ text: String = "") {
        self.dialect = dialect
        self.text = text
    }

    /// Binds `value` and returns its placeholder.
    mutating func bind(_ value: SQLValue) -> String {
        values.append(value)
        return dialect.placeholder(values.count)
    }

    mutating func bind(_ text: String) -> String { bind(.text(text)) }
    mutating func bind(_ number: Double) -> String { bind(.real(number)) }
    mutating func bind(_ number: Int) -> String { bind(.integer(Int64(number))) }

    /// `column` is one of `texts`.
    mutating func oneOf(_ column: String, _ texts: [String]) -> String {
        if dialect.bindsArrays { return "\(column) = ANY(\(bind(.texts(texts))))" }
        return "\(column) IN (\(texts.map { bind(.text($0)) }.joined(separator: ", ")))"
    }

    /// `haystack` contains the bound `needle`.
    mutating func contains(_ haystack: String, _ needle: String) -> String {
        "\(dialect.position)(\(haystack), \(bind(needle))) > 0"
    }
}

/// What makes an outbox entry one of a kind: a message (whose id is a hash of its webhook, route and output, see
/// `MessageID.derive`) for one destination. Written as the webhook's columns rather than the id, so the index
/// grows where webhook ids do instead of at random, and finds a webhook's messages too.
enum OutboxKey {
    static let columns = "source, webhook_id, route, output, destination"
}

/// The outbox statements whose text both stores share: dead letters, replay, pruning and forgetting.
enum OutboxSQL {
    /// The dead letters a filter selects (a WHERE condition).
    static func deadLetterCondition(_ filter: DeadLetterFilter, into sql: inout SQLStatement) -> String {
        var clauses = ["status = \(literal: .dead)"]
        if !filter.messageIDs.isEmpty { clauses.append(sql.oneOf("message_id", filter.messageIDs)) }
        if let destination = filter.destination { clauses.append("destination = \(sql.bind(destination.rawValue))") }
        if let source = filter.source { clauses.append("source = \(sql.bind(source))") }
        if let route = filter.route { clauses.append("route = \(sql.bind(route))") }
        if let reason = filter.reason { clauses.append(sql.contains("dead_reason", reason)) }
        if let since = filter.since { clauses.append("finished_at >= \(sql.bind(since.timeIntervalSince1970))") }
        if let until = filter.until { clauses.append("finished_at < \(sql.bind(until.timeIntervalSince1970))") }
        return clauses.joined(separator: " AND ")
    }

    /// The trace parents of some webhooks, by the journal's key (source first).
    static func traceParents(_ webhooks: Set<WebhookRef>, _ dialect: SQLDialect) -> SQLStatement {
        var sql = SQLStatement(dialect)
        let bySource = Dictionary(grouping: webhooks, by: \.source)
        var clauses: [String] = []
        for source in bySource.keys.sorted() {
            let sourceValue = sql.bind(source)
            clauses.append("(source = \(sourceValue) AND \(sql.oneOf("webhook_id", bySource[source, default: []].map(\.webhookID).sorted())))")
        }
        sql.text = "SELECT source, webhook_id, trace_parent FROM webhooks WHERE trace_parent IS NOT NULL AND (\(clauses.joined(separator: " OR ")))"
        return sql
    }

    static func deadLetters(_ filter: DeadLetterFilter, limit: Int, _ dialect: SQLDialect) -> SQLStatement {
        var sql = SQLStatement(dialect)
        let condition = deadLetterCondition(filter, into: &sql)
        sql.text = "SELECT \(DeadLetter.columns) FROM outbox WHERE \(condition) ORDER BY finished_at, seq LIMIT \(sql.bind(limit))"
        return sql
    }

    /// Queues the selected dead letters again, those with someone to send them for.
    static func retryDeadLetters(_ filter: DeadLetterFilter, at: Date, _ dialect: SQLDialect) -> SQLStatement {
        var sql = SQLStatement(dialect)
        let t = sql.bind(at.timeIntervalSince1970)
        let t2 = sql.bind(at.timeIntervalSince1970)
        let condition = deadLetterCondition(filter, into: &sql)
        sql.text = """
            UPDATE outbox SET status = \(literal: .pending), next_attempt_at = \(t), created_at = \(t2), attempts = 0, lease_until = 0\(dialect.leaseOwnerReset),
                dead_reason = NULL, dead_detail = NULL, finished_at = NULL, last_error = NULL
            WHERE \(condition) AND (email IS NOT NULL OR profile_id IS NOT NULL OR domain IS NOT NULL OR account_id IS NOT NULL)
            """
        return sql
    }

    static func dropDeadLetters(_ filter: DeadLetterFilter, _ dialect: SQLDialect) -> SQLStatement {
        var sql = SQLStatement(dialect)
        sql.text = "DELETE FROM outbox WHERE \(deadLetterCondition(filter, into: &sql))"
        return sql
    }

    /// A replayed message in the replay lane: inserted when new; an entry not yet delivered takes the new content
    /// and is queued again.
    static func enqueueReplay(_ message: KoalaMessage, destination: Destination, at now: Double, _ dialect: SQLDialect) -> SQLStatement {
        var sql = SQLStatement(dialect)
        let values: [SQLValue] = [
            .text(message.messageID), .text(destination.rawValue), .text(message.source), .text(message.webhookID), .text(message.route),
            .text(message.output.rawValue), .text(message.endpoint.rawValue), .text(message.kind.rawValue), .text(message.identity.key),
            .text(message.identity.email), .text(message.identity.profileID), .text(message.identity.domain),
            .text(message.identity.accountID), .text(message.item.encoded()), .real(message.eventTime.timeIntervalSince1970), .real(now),
        ]
        let placeholders = values.map { sql.bind($0) }.joined(separator: ", ")
        let due = sql.bind(now), userID = sql.bind(.text(message.identity.userID))
        sql.text = """
            INSERT INTO outbox (message_id, destination, source, webhook_id, route, output, endpoint, kind, person_key, email, profile_id,
                domain, account_id, item, event_time, created_at, status, next_attempt_at, lane, user_id)
            VALUES (\(placeholders), \(literal: .pending), \(due), \(literal: .replay), \(userID))
            ON CONFLICT (\(OutboxKey.columns)) DO UPDATE SET
                item = excluded.item, person_key = excluded.person_key, email = excluded.email, user_id = excluded.user_id,
                profile_id = excluded.profile_id, domain = excluded.domain, account_id = excluded.account_id,
                status = \(literal: .pending), next_attempt_at = excluded.next_attempt_at, created_at = excluded.created_at,
                attempts = 0, lease_until = 0\(dialect.leaseOwnerReset), dead_reason = NULL, dead_detail = NULL, finished_at = NULL,
                lane = \(literal: .replay)
            WHERE outbox.status <> \(literal: .delivered)
            """
        return sql
    }

    /// Retention: delivered and dry-run messages finished before `cutoff`, then webhooks received before it with
    /// nothing left to deliver.
    static func prune(before cutoff: Double, _ dialect: SQLDialect) -> [SQLStatement] {
        var messages = SQLStatement(dialect)
        messages.text = "DELETE FROM outbox WHERE status IN (\(literal: [.delivered, .dryRun])) AND finished_at < \(messages.bind(cutoff))"
        var webhooks = SQLStatement(dialect)
        webhooks.text = """
            DELETE FROM webhooks WHERE received_at < \(webhooks.bind(cutoff)) AND NOT EXISTS (
                SELECT 1 FROM outbox o WHERE o.source = webhooks.source AND o.webhook_id = webhooks.webhook_id
                  AND o.status IN (\(literal: [.pending, .waiting])))
            """
        return [messages, webhooks]
    }

    /// Erasure: the person's messages, the webhooks that name the address, and what was remembered of them (a
    /// remembered state holding the address as a value too: it is JSON text, the quoted address). In the order
    /// of `PruneReport`'s counts: messages, webhooks, identities.
    static func forget(email: String, _ dialect: SQLDialect) -> [SQLStatement] {
        var messages = SQLStatement(dialect)
        messages.text = "DELETE FROM outbox WHERE email = \(messages.bind(email)) OR \(messages.contains("lower(item)", email))"
        var webhooks = SQLStatement(dialect)
        webhooks.text = "DELETE FROM webhooks WHERE \(webhooks.contains("lower(\(dialect.bytesAsText("body")))", email))"
        var identities = SQLStatement(dialect)
        identities.text = "DELETE FROM identities WHERE email = \(identities.bind(email)) OR \(identities.contains("lower(state)", JSONValue.string(email).encoded()))"
        return [messages, webhooks, identities]
    }
}
