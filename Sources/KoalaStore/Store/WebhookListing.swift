import Foundation

/// A value bound into a listing statement, for either backend.
enum ListingBind: Sendable {
    case text(String)
    case real(Double)
}

/// The console's listings as SQL both backends run: the text is the same, only the placeholders differ
/// (`?` for SQLite, `$n` for PostgreSQL, from `placeholder`).
enum WebhookListing {
    /// Each state's count of a webhook's messages, as correlated index probes on `outbox(source, webhook_id)`.
    static let counts = OutboxStatus.allCases.map { status in
        "(SELECT count(*) FROM outbox o WHERE o.source = w.source AND o.webhook_id = w.webhook_id AND o.status = \(literal: status)) AS n\(status.rawValue)"
    }.joined(separator: ", ")

    static let columns = "w.source, w.webhook_id, w.event_type, w.received_at, \(counts)"

    /// One source's webhooks matching `query`, newest first, after `cursor`, at most `limit`.
    static func bySource(_ source: String, query: WebhookQuery, after cursor: WebhookCursor?, limit: Int,
                         placeholder: (Int) -> String) -> (sql: String, binds: [ListingBind]) {
        var binds: [ListingBind] = []
        func bind(_ value: ListingBind) -> String {
            binds.append(value)
            return placeholder(binds.count)
        }
        var sql = "SELECT \(columns) FROM webhooks w WHERE w.source = \(bind(.text(source)))"
        if let type = query.eventType { sql += " AND w.event_type = \(bind(.text(type)))" }
        if let id = query.webhookID { sql += " AND w.webhook_id = \(bind(.text(id)))" }
        if let since = query.since { sql += " AND w.received_at >= \(bind(.real(since.timeIntervalSince1970)))" }
        if let until = query.until { sql += " AND w.received_at < \(bind(.real(until.timeIntervalSince1970)))" }
        if let cursor {
            // (received_at, source, webhook_id) before the cursor, newest first, with this query's source fixed.
            let at = cursor.receivedAt
            if source < cursor.source {
                sql += " AND w.received_at <= \(bind(.real(at)))"
            } else if source > cursor.source {
                sql += " AND w.received_at < \(bind(.real(at)))"
            } else {
                // The first bound keeps an index range on (source, received_at); an OR alone made it a scan.
                sql += " AND w.received_at <= \(bind(.real(at)))"
                sql += " AND (w.received_at < \(bind(.real(at))) OR w.webhook_id < \(bind(.text(cursor.webhookID))))"
            }
        }
        let ofThisWebhook = "FROM outbox o WHERE o.source = w.source AND o.webhook_id = w.webhook_id"
        if let state = query.state {
            let states = state == .pending ? [OutboxStatus.pending, .waiting] : [state]
            sql += " AND EXISTS (SELECT 1 \(ofThisWebhook) AND o.status IN (\(literal: states)))"
        }
        if query.noMessages { sql += " AND NOT EXISTS (SELECT 1 \(ofThisWebhook))" }
        sql += " ORDER BY w.received_at DESC, w.webhook_id DESC LIMIT \(max(1, min(limit, 1000)))"
        return (sql, binds)
    }

    /// The webhooks that produced a message for `email`, newest first.
    static func byEmail(_ email: String, limit: Int, placeholder: (Int) -> String) -> (sql: String, binds: [ListingBind]) {
        let sql = """
            SELECT \(columns) FROM webhooks w
            WHERE (w.source, w.webhook_id) IN (SELECT e.source, e.webhook_id FROM outbox e WHERE e.email = \(placeholder(1)))
            ORDER BY w.received_at DESC, w.source DESC, w.webhook_id DESC LIMIT \(max(1, min(limit, 1000)))
            """
        return (sql, [.text(email)])
    }

    /// One webhook's outbox entries; binds its source, then its id.
    static func messages(placeholder: (Int) -> String) -> String {
        """
        SELECT destination, message_id, route, endpoint, status, attempts, last_error, dead_reason, dead_detail, next_attempt_at,
               finished_at
        FROM outbox WHERE source = \(placeholder(1)) AND webhook_id = \(placeholder(2)) ORDER BY seq
        """
    }

    /// A summary from a row's columns; `count` reads a state's count column (`n<status>`) from the backend's row.
    static func summary(source: String, webhookID: String, eventType: String, receivedAt: Double, count: (OutboxStatus) throws -> Int) rethrows -> WebhookSummary {
        var messages: [OutboxStatus: Int] = [:]
        for status in OutboxStatus.allCases {
            let n = try count(status)
            if n > 0 { messages[status] = n }
        }
        return WebhookSummary(source: source, webhookID: webhookID, eventType: eventType, receivedAt: Date(timeIntervalSince1970: receivedAt),
                              messages: messages)
    }
}
