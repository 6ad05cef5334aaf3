import Foundation
import KoalaCore

/// The providers `backfill` and `reconcile` read, with their list APIs as their references document them:
/// paths, pagination (Stripe's `starting_after`, Paddle's and WorkOS's `after`, Chargebee's `next_offset`,
/// Lemon Squeezy's `page[number]`, Clerk's `offset`), authentication and documented rate limits.
package enum ProviderKind: String, Sendable, CaseIterable {
    /// Stripe: customers, subscriptions (every status, discounts expanded).
    case stripe
    /// Paddle Billing: discounts, customers, subscriptions.
    case paddle
    /// Chargebee: customers, subscriptions (each with its customer).
    case chargebee
    /// Lemon Squeezy: customers, subscriptions.
    case lemonsqueezy
    /// Clerk: users; organizations with their domains and memberships.
    case clerk
    /// WorkOS: users; organizations (domains inline) with their memberships.
    case workos

    /// The provider's name as people write it.
    package var displayName: String {
        switch self {
        case .stripe: "Stripe"
        case .paddle: "Paddle"
        case .chargebee: "Chargebee"
        case .lemonsqueezy: "Lemon Squeezy"
        case .clerk: "Clerk"
        case .workos: "WorkOS"
        }
    }

    /// The settings' prefix: `STRIPE_API_KEY`, `STRIPE_API_URL`.
    package var settingPrefix: String { rawValue.uppercased() }

    /// The API's address when `<PREFIX>_API_URL` is not set (Chargebee has one per site: no default).
    package var defaultURL: String? {
        switch self {
        case .stripe: "https://api.stripe.com"
        case .paddle: "https://api.paddle.com"
        case .chargebee: nil
        case .lemonsqueezy: "https://api.lemonsqueezy.com"
        case .clerk: "https://api.clerk.com"
        case .workos: "https://api.workos.com"
        }
    }

    /// Requests per second by default, under each provider's documented limit.
    package var defaultRequestsPerSecond: Double {
        switch self {
        case .stripe: 20          // 100 read requests/s live, 25/s in test mode
        case .paddle: 3.5         // 240 requests per minute per IP
        case .chargebee: 2        // 150 per minute on the smallest plans (test sites: 100)
        case .lemonsqueezy: 4.5   // 300 per minute
        case .clerk: 8            // 100 per 10 seconds for the Backend API
        case .workos: 50          // 6,000 per minute
        }
    }

    /// The objects read, in order: what identifies people first, so later objects find their email.
    var phases: [String] {
        switch self {
        case .stripe: ["customers", "subscriptions"]
        case .paddle: ["discounts", "customers", "subscriptions"]
        case .chargebee: ["customers", "subscriptions"]
        case .lemonsqueezy: ["customers", "subscriptions"]
        case .clerk, .workos: ["users", "organizations"]
        }
    }

    /// The authentication headers for `key`.
    func headers(key: String) -> [(String, String)] {
        switch self {
        case .chargebee:
            return [("Authorization", "Basic " + Data("\(key):".utf8).base64EncodedString())]
        case .lemonsqueezy:
            return [("Authorization", "Bearer \(key)"), ("Accept", "application/vnd.api+json")]
        default:
            return [("Authorization", "Bearer \(key)")]
        }
    }
}

/// One object read: its kind (`customer`, `subscription`, `organization_domain` …), the object as the API gave
/// it (for Chargebee, the list entry holding it), its id and when it last changed (when the API says).
struct ProviderObject: Sendable {
    let kind: String
    let object: JSONValue
    let id: String
    let updatedAt: Date?
    /// The organization an organization's domains and memberships belong to (taken after it, in order).
    var group: String?
    /// Read once more after its children (not counted again): a Clerk organization, whose account traits need the
    /// domain its domains' snapshots remember, and whose domains need the name it remembers.
    var again = false
}

/// One page of a list.
struct ProviderPage: Sendable {
    var objects: [ProviderObject] = []
    /// The cursor of the next page; nil: this was the last.
    var next: String?
    /// How many objects the list holds, when the API says.
    var total: Int?
}

/// Reads one provider's lists and wraps each object the way that provider's webhooks wrap theirs, so the
/// source's own `id:`, `type:` and `time:` and the shipped routes read a snapshot like an event.
struct ProviderReader: Sendable {
    let kind: ProviderKind
    let http: ProviderHTTP
    /// Sub-requests at once (an organization's domains and memberships).
    let concurrency: Int

    static let pageSize = 100

    func page(_ phase: String, cursor: String?, since: Date?) async throws -> ProviderPage {
        let limit = String(Self.pageSize)
        switch (kind, phase) {
        case (.stripe, _):
            var query = [("limit", limit)]
            if phase == "subscriptions" { query += [("status", "all"), ("expand[]", "data.discounts")] }
            if let cursor { query.append(("starting_after", cursor)) }
            if let since { query.append(("created[gte]", String(Int64(since.timeIntervalSince1970)))) }
            let json = try await http.get(phase == "customers" ? "/v1/customers" : "/v1/subscriptions", query: query)
            let objects = json["data"]?.arrayValue ?? []
            let kind = phase == "customers" ? "customer" : "subscription"
            var page = ProviderPage(objects: objects.compactMap { Self.object(kind, $0, id: $0["id"], updated: Self.time($0["created"])) })
            if json["has_more"]?.boolValue == true, let last = objects.last?["id"]?.stringValue { page.next = last }
            return page

        case (.paddle, _):
            var query = [("per_page", "200")]
            if let cursor { query.append(("after", cursor)) }
            let json = try await http.get("/\(phase)", query: query)
            let objects = json["data"]?.arrayValue ?? []
            let kind = String(phase.dropLast())
            var page = ProviderPage(objects: objects.compactMap { Self.object(kind, $0, id: $0["id"], updated: Self.time($0["updated_at"])) })
            let pagination = json["meta"]?["pagination"]
            if pagination?["has_more"]?.boolValue == true, let last = objects.last?["id"]?.stringValue { page.next = last }
            page.total = pagination?["estimated_total"]?.intValue
            return page

        case (.chargebee, _):
            var query = [("limit", limit)]
            if let cursor { query.append(("offset", cursor)) }
            if let since { query.append(("updated_at[after]", String(Int64(since.timeIntervalSince1970)))) }
            let json = try await http.get("/api/v2/\(phase)", query: query)
            let kind = String(phase.dropLast())
            let entries = json["list"]?.arrayValue ?? []
            var page = ProviderPage(objects: entries.compactMap { Self.object(kind, $0, id: $0[kind]?["id"], updated: Self.time($0[kind]?["updated_at"])) })
            page.next = json["next_offset"]?.stringValue
            return page

        case (.lemonsqueezy, _):
            let number = Int(cursor ?? "1") ?? 1
            let json = try await http.get("/v1/\(phase)", query: [("page[size]", limit), ("page[number]", String(number))])
            let kind = String(phase.dropLast())
            let objects = json["data"]?.arrayValue ?? []
            var page = ProviderPage(objects: objects.compactMap { Self.object(kind, $0, id: $0["id"], updated: Self.time($0["attributes"]?["updated_at"])) })
            let meta = json["meta"]?["page"]
            if let current = meta?["currentPage"]?.intValue, let last = meta?["lastPage"]?.intValue, current < last {
                page.next = String(current + 1)
            }
            page.total = meta?["total"]?.intValue
            return page

        case (.clerk, "users"):
            let offset = Int(cursor ?? "0") ?? 0
            let json = try await http.get("/v1/users", query: [("limit", limit), ("offset", String(offset)), ("order_by", "+created_at")])
            let objects = json.arrayValue ?? json["data"]?.arrayValue ?? []
            var page = ProviderPage(objects: objects.compactMap { Self.object("user", $0, id: $0["id"], updated: Self.time($0["updated_at"])) })
            if objects.count == Self.pageSize { page.next = String(offset + objects.count) }
            if offset == 0 { page.total = try? await http.get("/v1/users/count")["total_count"]?.intValue }
            return page

        case (.clerk, _):
            let offset = Int(cursor ?? "0") ?? 0
            let json = try await http.get("/v1/organizations", query: [("limit", limit), ("offset", String(offset))])
            let organizations = json["data"]?.arrayValue ?? []
            var page = ProviderPage(total: json["total_count"]?.intValue)
            if organizations.count == Self.pageSize { page.next = String(offset + organizations.count) }
            page.objects = try await withChildren(organizations) { organization in
                guard let id = organization["id"]?.stringValue else { return [] }
                let path = "/v1/organizations/\(ProviderHTTP.encode(id))"
                var out = try await all(path + "/domains").compactMap {
                    Self.object("organization_domain", $0, id: $0["id"], updated: Self.time($0["updated_at"]))
                }
                out += try await all(path + "/memberships").compactMap {
                    Self.object("membership", $0, id: $0["id"], updated: Self.time($0["updated_at"]))
                }
                if var again = Self.object("organization", organization, id: organization["id"], updated: Self.time(organization["updated_at"])) {
                    again.again = true
                    out.append(again)
                }
                return out
            } parent: { Self.object("organization", $0, id: $0["id"], updated: Self.time($0["updated_at"])) }
            return page

        case (.workos, "users"):
            var query = [("limit", limit), ("order", "asc")]
            if let cursor { query.append(("after", cursor)) }
            let json = try await http.get("/user_management/users", query: query)
            let objects = json["data"]?.arrayValue ?? []
            var page = ProviderPage(objects: objects.compactMap { Self.object("user", $0, id: $0["id"], updated: Self.time($0["updated_at"])) })
            page.next = json["list_metadata"]?["after"]?.stringValue
            return page

        case (.workos, _):
            var query = [("limit", limit), ("order", "asc")]
            if let cursor { query.append(("after", cursor)) }
            let json = try await http.get("/organizations", query: query)
            let organizations = json["data"]?.arrayValue ?? []
            var page = ProviderPage(next: json["list_metadata"]?["after"]?.stringValue)
            page.objects = try await withChildren(organizations) { organization in
                guard let id = organization["id"]?.stringValue else { return [] }
                var memberships: [ProviderObject] = []
                var after: String?
                repeat {
                    var query = [("organization_id", id), ("limit", limit)]
                    if let after { query.append(("after", after)) }
                    let json = try await http.get("/user_management/organization_memberships", query: query)
                    for var membership in json["data"]?.arrayValue ?? [] {
                        // Older answers leave out the organization's name, which the routes send.
                        if membership["organization_name"] == nil, case .object(var fields) = membership, let name = organization["name"] {
                            fields["organization_name"] = name
                            membership = .object(fields)
                        }
                        if let object = Self.object("membership", membership, id: membership["id"], updated: Self.time(membership["updated_at"])) {
                            memberships.append(object)
                        }
                    }
                    after = json["list_metadata"]?["after"]?.stringValue
                } while after != nil
                return memberships
            } parent: { Self.object("organization", $0, id: $0["id"], updated: Self.time($0["updated_at"])) }
            return page
        }
    }

    /// Every page of an offset-paged Clerk list (`{data, total_count}`).
    private func all(_ path: String) async throws -> [JSONValue] {
        var out: [JSONValue] = []
        var offset = 0
        while true {
            let json = try await http.get(path, query: [("limit", String(Self.pageSize)), ("offset", String(offset))])
            let data = json["data"]?.arrayValue ?? json.arrayValue ?? []
            out += data
            offset += data.count
            if data.count < Self.pageSize { return out }
            if let total = json["total_count"]?.intValue, offset >= total { return out }
        }
    }

    /// Each parent followed by its children, the children read `concurrency` parents at a time.
    private func withChildren(_ parents: [JSONValue], _ children: @escaping @Sendable (JSONValue) async throws -> [ProviderObject],
                              parent: (JSONValue) -> ProviderObject?) async throws -> [ProviderObject] {
        var read = [[ProviderObject]](repeating: [], count: parents.count)
        try await withThrowingTaskGroup(of: (Int, [ProviderObject]).self) { group in
            var next = 0
            func start() {
                guard next < parents.count else { return }
                let index = next, value = parents[index]
                next += 1
                group.addTask { (index, try await children(value)) }
            }
            for _ in 0..<max(1, concurrency) { start() }
            while let (index, objects) = try await group.next() {
                read[index] = objects
                start()
            }
        }
        var out: [ProviderObject] = []
        for (index, value) in parents.enumerated() {
            guard var object = parent(value) else { continue }
            object.group = object.id
            out.append(object)
            out += read[index].map { child in
                var child = child
                child.group = object.id
                return child
            }
        }
        return out
    }

    static func object(_ kind: String, _ value: JSONValue, id: JSONValue?, updated: Date?) -> ProviderObject? {
        guard let id = id?.textValue, !id.isEmpty, id.utf8.count <= 200 else { return nil }
        return ProviderObject(kind: kind, object: value, id: id, updatedAt: updated)
    }

    /// An object's time as the API writes it: Unix seconds or milliseconds, or ISO-8601 text.
    static func time(_ value: JSONValue?) -> Date? { Timestamps.date(from: value) }

    /// The object wrapped as the provider's webhooks wrap theirs, with the snapshot's id, type and time where the
    /// source reads them (Clerk reads its id from the `svix-id` header).
    func envelope(_ object: ProviderObject, id: String, readAt: Date) -> (body: JSONValue, headers: [(String, String)]) {
        let type = JSONValue.string(VerifiedWebhook.snapshotTypePrefix + object.kind)
        let seconds = JSONValue.int(Int64(readAt.timeIntervalSince1970))
        let iso = JSONValue.string(Timestamps.iso(readAt))
        switch kind {
        case .stripe:
            return (.object(["id": .string(id), "object": "event", "type": type, "created": seconds, "data": .object(["object": object.object])]), [])
        case .paddle:
            return (.object(["event_id": .string(id), "event_type": type, "occurred_at": iso, "data": object.object]), [])
        case .chargebee:
            return (.object(["id": .string(id), "object": "event", "event_type": type, "occurred_at": seconds, "content": object.object]), [])
        case .lemonsqueezy:
            // The source's id is the event's name, the object and its updated_at: a snapshot per object version.
            return (.object(["meta": .object(["event_name": type, "snapshot_id": .string(id)]), "data": object.object]), [])
        case .clerk:
            let millis = JSONValue.int(Int64(readAt.timeIntervalSince1970 * 1000))
            return (.object(["object": "event", "type": type, "timestamp": millis, "data": object.object]),
                    [("svix-id", id), ("webhook-id", id)])
        case .workos:
            return (.object(["id": .string(id), "event": type, "created_at": iso, "data": object.object]), [])
        }
    }
}

extension JSONValue {
    /// The elements of an array; nil for other values.
    var arrayValue: [JSONValue]? {
        if case .array(let elements) = self { return elements }
        return nil
    }

    /// A boolean's value; nil for other values.
    var boolValue: Bool? {
        if case .bool(let flag) = self { return flag }
        return nil
    }

    /// A whole number (or a string holding one) within Int; nil otherwise.
    var intValue: Int? {
        switch self {
        case .int(let i): Int(exactly: i)
        case .string(let s): Int(s)
        case .double(let d): d.isFinite && d.rounded() == d && abs(d) < 1e15 ? Int(d) : nil
        default: nil
        }
    }
}
