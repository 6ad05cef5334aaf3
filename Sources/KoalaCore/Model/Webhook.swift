package import Foundation

/// A webhook that passed signature verification and whose body is valid JSON. Everything after
/// ingest works on this value; nothing unverified ever becomes one.
package struct VerifiedWebhook: Sendable {
    /// The source's name (its rule file).
    package let source: String
    /// The provider's id of this delivery: the deduplication key within the source.
    package let webhookID: String
    /// The provider's event type, e.g. `invoice.paid`.
    package let eventType: String
    /// The provider's own event time when the rules say where it is, else the time we received it.
    package let eventTime: Date
    /// When the router received it.
    package let receivedAt: Date
    /// Header names lower-cased; credentials (authorization, cookies, signatures) are removed before storing.
    package let headers: [String: String]
    /// The body exactly as received.
    package let body: [UInt8]
    /// The body parsed (a tape over `body`: rules read it without building a tree).
    let json: JSONTape
    /// Which configured secret verified it (its environment name; never the secret).
    package let secretLabel: String
    /// Version of the rule table that routed it.
    package let rulesVersion: String
    /// Hex SHA-256 of the raw body (`webhook.body_sha256`), computed once.
    let bodySHA256: String
    /// The `webhook.` fields rules read (id, type, time, source, received_at, body_sha256), built once:
    /// routing reads them several times per webhook.
    package let fields: JSONValue
    /// Why the provider's event time could not be used (so `eventTime` is the time of receipt); not stored.
    package var eventTimeProblem: String?
    /// The remembered states its routes were compared against when it was accepted (nil: not recorded, as for
    /// webhooks stored before state memory). Stored with it, so routing it again later (a message that waited
    /// for an identity, a replay, `simulate --stored`) decides as ingest did, whatever states came since.
    package var routedStates: [Remembered]?
    /// The W3C `traceparent` of the span that received it, when tracing is on: stored with it, so the spans that
    /// deliver its messages join its trace, after a restart too. Nil when tracing is off.
    package var traceParent: String?

    /// The type of every snapshot begins so (`snapshot.customer`, `snapshot.subscription`, …).
    package static let snapshotTypePrefix = "snapshot."

    /// A provider object read by `backfill` or `reconcile` rather than an event the provider sent: it states the
    /// object as it is, and tells no moment (README, Backfill and reconcile).
    package var isSnapshot: Bool { eventType.hasPrefix(Self.snapshotTypePrefix) }

    package init(source: String, webhookID: String, eventType: String, eventTime: Date, receivedAt: Date,
                headers: [String: String], body: [UInt8], json: JSONTape, secretLabel: String, rulesVersion: String,
                bodySHA256: String? = nil) {
        self.source = source
        self.webhookID = webhookID
        self.eventType = eventType
        self.eventTime = eventTime
        self.receivedAt = receivedAt
        self.headers = headers
        self.body = body
        self.json = json
        self.secretLabel = secretLabel
        self.rulesVersion = rulesVersion
        let bodySHA256 = bodySHA256 ?? Hex.encode(Crypto.digest(.sha256, body))
        self.bodySHA256 = bodySHA256
        fields = .object([
            "id": .string(webhookID),
            "type": .string(eventType),
            "time": .string(Timestamps.iso(eventTime)),
            "source": .string(source),
            "received_at": .string(Timestamps.iso(receivedAt)),
            "body_sha256": .string(bodySHA256),
        ])
    }
}

/// Which Koala endpoint a message goes to.
package enum KoalaEndpoint: String, Sendable, Codable, CaseIterable {
    /// `/web/projects/{key}/batch`, one visitor per request.
    case person
    /// `/web/projects/{key}/accounts/batch`, one account per request.
    case account

    /// The API path of this endpoint, relative to the project.
    package var path: String {
        switch self {
        case .person: "batch"
        case .account: "accounts/batch"
        }
    }
}

extension KoalaEndpoint {
    /// Koala's documented cap per type (events, identifies, page views) and request.
    package static let maxPerType = 30
}

/// Who a message is about: a visitor (email and/or profile id) or an account (domain or account id).
package struct KoalaIdentity: Sendable, Hashable {
    /// The person's email address.
    package var email: String?
    /// Koala's profile id (a UUID).
    package var profileID: String?
    /// A company domain.
    package var domain: String?
    /// Koala's account id.
    package var accountID: String?
    /// The person's id for Segment-compatible destinations (`person.user_id`); Koala never gets it, and it
    /// is no part of `key` (Koala's ordering).
    package var userID: String?

    package init(email: String? = nil, profileID: String? = nil, domain: String? = nil, accountID: String? = nil, userID: String? = nil) {
        self.email = email
        self.profileID = profileID
        self.domain = domain
        self.accountID = accountID
        self.userID = userID
    }

    /// Messages with equal keys may share one request and are sent in order, one request at a time.
    package var key: String {
        if isAccount {
            return "a|\(domain ?? "")|\(accountID ?? "")"
        }
        return "p|\(email ?? "")|\(profileID ?? "")"
    }

    /// Whether a person is named (email, profile id or user id).
    package var namesPerson: Bool { email != nil || profileID != nil || userID != nil }

    /// Whether this names an account (a domain or account id): the person beside it, if any, is only who the
    /// account's traits came with (Segment's group call names them), never part of Koala's request.
    package var isAccount: Bool { domain != nil || accountID != nil }

    /// Who Koala's request names: an account alone (without the person its traits came with), or the person.
    package var koala: KoalaIdentity { isAccount ? KoalaIdentity(domain: domain, accountID: accountID) : self }

    /// The top-level identity fields of a Koala request body: an account's domain or account id, or a person's.
    package var topLevel: [(String, String)] {
        var out: [(String, String)] = []
        if isAccount {
            if let domain { out.append(("domain", domain)) }
            if let accountID { out.append(("account_id", accountID)) }
            return out
        }
        if let profileID { out.append(("profile_id", profileID)) }
        if let email { out.append(("email", email)) }
        if let domain { out.append(("domain", domain)) }
        if let accountID { out.append(("account_id", accountID)) }
        return out
    }
}

/// One Koala item (a custom event or an identify) produced by one route output for one webhook.
package struct KoalaMessage: Sendable, Equatable {
    /// Which list of a batch the item goes in.
    package enum Kind: String, Sendable, Codable {
        case track, identify
    }

    /// Which output of a route produced a message. The raw value is part of the `message_id` contract.
    package enum Output: String, Sendable, Codable, CaseIterable {
        case track, identify, account
    }

    /// What becomes of a message once it is stored; decided by the router, carried out by the stores.
    package enum Disposition: Sendable, Equatable {
        /// Queued for delivery.
        case send
        /// It cannot be sent as routed (e.g. no valid email): straight to the dead letters, with the reason.
        case dead(reason: String)
        /// Its identity comes from a `recall` that missed: it waits for that memory entry.
        case wait(for: MemoryKey)
    }

    /// The idempotency key Koala deduplicates by, derived from source, webhook id, route and output.
    package let messageID: String
    /// The source it came from.
    package let source: String
    /// The webhook it came from.
    package let webhookID: String
    /// The route that produced it.
    package let route: String
    /// Which output of the route.
    package let output: Output
    /// Which Koala endpoint it goes to.
    package let endpoint: KoalaEndpoint
    /// Event, identify or account traits.
    package let kind: Kind
    /// Who it is about.
    package let identity: KoalaIdentity
    /// The element of `events[]` or `identifies[]`, including `message_id` and `sent_at`.
    package let item: JSONValue
    /// When it happened (the webhook's event time).
    package let eventTime: Date
    /// Send, dead-letter at once, or wait for an identity.
    package let disposition: Disposition
    /// Identity fields that were present but unusable while another field named the person (an email that is
    /// valid beside a `profile_id` that is not a UUID, say): the message is sent by the usable field, and these
    /// are left out, logged and counted.
    package var droppedFields: [DroppedField] = []
    /// Where it is delivered: one outbox entry per destination (the configured ones a route allows).
    package var destinations: [Destination] = [.koala]

    /// An identity field left out of a message, and why.
    package struct DroppedField: Sendable, Equatable {
        /// The rule's field, e.g. `person.profile_id`.
        package let field: String
        /// Why it is unusable, e.g. `is not a UUID`.
        package let reason: String
    }

    init(messageID: String, source: String, webhookID: String, route: String, output: Output,
                endpoint: KoalaEndpoint, kind: Kind, identity: KoalaIdentity, item: JSONValue,
                eventTime: Date, disposition: Disposition = .send) {
        self.messageID = messageID
        self.source = source
        self.webhookID = webhookID
        self.route = route
        self.output = output
        self.endpoint = endpoint
        self.kind = kind
        self.identity = identity
        self.item = item
        self.eventTime = eventTime
        self.disposition = disposition
    }

    /// The dead-letter reason of a message that cannot be sent.
    package var problem: String? {
        if case .dead(let reason) = disposition { return reason }
        return nil
    }

    /// The memory entry a waiting message waits for.
    package var waitingFor: MemoryKey? {
        if case .wait(let key) = disposition { return key }
        return nil
    }
}

/// What a route remembered under a provider id, for later webhooks to `recall`: an identity, and (state
/// memory) a few values as of one moment, e.g. a subscription's last MRR and status.
package struct Remembered: Sendable, Equatable {
    /// The memory key.
    package let key: MemoryKey
    /// Who the key stands for (may be empty for state alone).
    package let identity: KoalaIdentity
    /// The remembered values (nil: this entry remembers no state).
    package let state: [String: JSONValue]?
    /// When the state was true: the event time of the webhook that remembered it. A webhook older than this
    /// never overwrites it, and the routes that read it are skipped for that webhook.
    package let stateAt: Date?

    package init(key: MemoryKey, identity: KoalaIdentity, state: [String: JSONValue]? = nil, stateAt: Date? = nil) {
        self.key = key
        self.identity = identity
        self.state = state
        self.stateAt = state == nil ? nil : stateAt
    }

    /// Names a state value may not take: `recall(...)` returns them for the identity and the state's time.
    package static let reservedNames: Set<String> = ["email", "profile_id", "domain", "remembered_at"]

    /// The value `recall(...)` returns: `{email, profile_id, domain}`, the remembered values and
    /// `remembered_at` (the state's time).
    package var value: JSONValue {
        var object: [String: JSONValue] = state ?? [:]
        if let email = identity.email { object["email"] = .string(email) }
        if let id = identity.profileID { object["profile_id"] = .string(id) }
        if let domain = identity.domain { object["domain"] = .string(domain) }
        if let stateAt { object["remembered_at"] = .string(Timestamps.iso(stateAt)) }
        return .object(object)
    }

    /// This entry with `later` written over it the way the stores do: known identity fields are kept when
    /// `later` lacks them; its state replaces this one's unless it is older.
    package func updated(by later: Remembered) -> Remembered {
        let identity = KoalaIdentity(email: later.identity.email ?? self.identity.email,
                                     profileID: later.identity.profileID ?? self.identity.profileID,
                                     domain: later.identity.domain ?? self.identity.domain)
        if let newState = later.state, stateAt.map({ at in later.stateAt.map { $0 >= at } ?? false }) ?? true {
            return Remembered(key: key, identity: identity, state: newState, stateAt: later.stateAt)
        }
        return Remembered(key: key, identity: identity, state: state, stateAt: stateAt)
    }
}

extension VerifiedWebhook {
    /// `routedStates` as stored: a JSON array of `{namespace, key, state, at}`.
    package var routedStatesJSON: String? {
        routedStates.map { entries in
            JSONValue.array(entries.sorted { ($0.key.namespace, $0.key.key) < ($1.key.namespace, $1.key.key) }.map { entry in
                var object: [String: JSONValue] = ["namespace": .string(entry.key.namespace), "key": .string(entry.key.key)]
                if let state = entry.state { object["state"] = .object(state) }
                if let at = entry.stateAt { object["at"] = .double(at.timeIntervalSince1970) }
                return .object(object)
            }).encoded()
        }
    }

    /// Reads `routedStatesJSON` back; nil for nothing recorded or unreadable text.
    package static func routedStates(fromJSON text: String?) -> [Remembered]? {
        guard let text, case .array(let items)? = try? JSONValue.parse(Array(text.utf8)) else { return nil }
        return items.compactMap { item in
            guard let namespace = item["namespace"]?.stringValue, let key = item["key"]?.stringValue,
                  case .object(let state)? = item["state"] else { return nil }
            return Remembered(key: MemoryKey(namespace: namespace, key: key), identity: KoalaIdentity(), state: state,
                              stateAt: item["at"]?.doubleValue.map { Date(timeIntervalSince1970: $0) })
        }
    }

    /// The memory to route this webhook with: identities as remembered now; states as they were when it was
    /// accepted, if that was recorded (a state remembered since, by this webhook or a later one, is not seen).
    package func memoryAsRouted(_ current: [MemoryKey: Remembered]) -> [MemoryKey: Remembered] {
        guard let routedStates else { return current }
        let then = Dictionary(routedStates.map { ($0.key, $0) }, uniquingKeysWith: { a, _ in a })
        var out: [MemoryKey: Remembered] = [:]
        for key in Set(current.keys).union(then.keys) {
            out[key] = Remembered(key: key, identity: current[key]?.identity ?? KoalaIdentity(), state: then[key]?.state, stateAt: then[key]?.stateAt)
        }
        return out
    }
}

/// The stable contract for `message_id`: the first 16 bytes of
/// SHA-256("koala-router:v1" ‖ len:source ‖ len:webhook id ‖ len:route ‖ len:output), where `len:x` is the
/// decimal UTF-8 byte length of x, a colon and x itself; formatted as a UUID (version 8, RFC 9562).
/// The same webhook routed by the same route and output always gets the same id, so retries and replays
/// are absorbed by Koala's idempotency.
package enum MessageID {
    /// The id of the message `route` makes as `output` from a webhook (a UUID-shaped hash of the four).
    package static func derive(source: String, webhookID: String, route: String, output: KoalaMessage.Output) -> String {
        // Built in one buffer and formatted in place: this runs for every message of every webhook.
        var input: [UInt8] = []
        input.reserveCapacity(48 + source.utf8.count + webhookID.utf8.count + route.utf8.count)
        input.append(contentsOf: "koala-router:v1".utf8)
        func add(_ part: String) {
            input.append(contentsOf: String(part.utf8.count).utf8)
            input.append(UInt8(ascii: ":"))
            input.append(contentsOf: part.utf8)
        }
        add(source)
        add(webhookID)
        add(route)
        add(output.rawValue)
        return Crypto.withDigest(.sha256, input) { digest in
            String(unsafeUninitializedCapacity: 36) { out in
                let hex = Hex.digits
                var o = 0
                for index in 0..<16 {
                    if index == 4 || index == 6 || index == 8 || index == 10 {
                        out[o] = UInt8(ascii: "-")
                        o += 1
                    }
                    var byte = digest[index]
                    if index == 6 { byte = (byte & 0x0F) | 0x80 }  // version 8
                    if index == 8 { byte = (byte & 0x3F) | 0x80 }  // RFC 4122 variant
                    out[o] = hex[Int(byte >> 4)]
                    out[o + 1] = hex[Int(byte & 0x0F)]
                    o += 2
                }
                return o
            }
        }
    }
}
