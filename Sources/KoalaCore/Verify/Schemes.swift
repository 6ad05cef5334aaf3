import Foundation

/// The signature schemes a rule file can name in `verify.scheme`, with each scheme's defaults and options.
package enum Schemes {
    /// Scalar options from a rule file's `verify` block (besides scheme, secrets, tolerance).
    package typealias Options = [String: String]

    /// An option with a bad value; the loader turns it into an error at the option's position.
    package struct OptionError: Error {
        let option: String
        let message: String
        let hint: String
    }

    /// A signature scheme: its options, its defaults and how it builds a verifier.
    package struct Definition: Sendable {
        let name: String
        let summary: String
        /// Default replay tolerance in seconds; nil for schemes that sign no timestamp (they rely on
        /// webhook-id dedupe against replays).
        package let defaultTolerance: Double?
        /// Where the webhook id, type and time live unless the rule file says otherwise.
        let defaultID: String
        let defaultType: String
        let defaultTime: String?
        /// How secret values are turned into key bytes unless `secret_encoding` says otherwise.
        let defaultSecretEncoding: SecretEncoding
        /// The provider's delivery metadata headers, stored with each webhook (ids, event names, hook ids).
        var deliveryHeaders: [String] = []
        /// Option keys this scheme accepts in the `verify` block.
        let options: [String]
        /// Options whose value names an environment variable; the loader passes the variable's value.
        var referenceOptions: [String] = []
        let make: @Sendable (_ options: Options, _ secrets: [WebhookSecret], _ tolerance: Double) throws(OptionError) -> any SignatureVerifier

        /// A verifier of this scheme for the given options, secrets and tolerance (what a rule file builds).
        package func verifier(options: Options, secrets: [WebhookSecret], tolerance: Double) throws(OptionError) -> any SignatureVerifier {
            try make(options, secrets, tolerance)
        }
    }

    /// How a secret's text becomes key bytes.
    package enum SecretEncoding: String, Sendable, CaseIterable {
        /// The secret text's UTF-8 bytes, as given (Stripe keeps the `whsec_` prefix in the key).
        case raw
        /// `whsec_<base64>` (Standard Webhooks): prefix removed, base64-decoded.
        case base64
        /// Hex text decoded to bytes (Outseta).
        case hex

        /// How the key is taken from the text, for messages about a secret.
        var keyDescription: String {
            switch self {
            case .raw: "the text's bytes"
            case .base64: "the base64 after whsec_, decoded"
            case .hex: "the hex text, decoded"
            }
        }

        func decode(_ text: String) -> [UInt8]? {
            switch self {
            case .raw: Array(text.utf8)
            case .base64: StandardWebhooksVerifier.decodeSecret(text)
            case .hex: Hex.decode(text.trimmingWhitespace)
            }
        }
    }

    static let common = ["scheme", "secrets", "tolerance", "secret_encoding"]

    /// Every scheme by the name a rule file uses.
    package static let all: [String: Definition] = {
        var all: [String: Definition] = [:]
        func add(_ d: Definition) { all[d.name] = d }
        func timestamped(_ format: TimestampedHeaderVerifier.Format, summary: String, tolerance: Double, id: String, type: String, time: String) -> Definition {
            Definition(name: format.scheme, summary: summary, defaultTolerance: tolerance, defaultID: id, defaultType: type,
                       defaultTime: time, defaultSecretEncoding: .raw, options: common,
                       make: { _, secrets, tolerance in TimestampedHeaderVerifier(format: format, secrets: secrets, tolerance: tolerance) })
        }
        func preset(_ format: HMACVerifier.Format, summary: String, tolerance: Double?, id: String, type: String, time: String?,
                    delivery: [String] = []) -> Definition {
            Definition(name: format.scheme, summary: summary, defaultTolerance: tolerance, defaultID: id, defaultType: type,
                       defaultTime: time, defaultSecretEncoding: .raw, deliveryHeaders: delivery, options: common,
                       make: { _, secrets, tolerance in HMACVerifier(format: format, secrets: secrets, tolerance: tolerance) })
        }
        add(timestamped(TimestampedHeaderVerifier.stripe, summary: "Stripe-Signature: t=…,v1=<hex>; HMAC-SHA256 of \"{t}.{body}\"", tolerance: 300,
                        id: "body.id", type: "body.type", time: "body.created | unix_seconds"))
        add(timestamped(TimestampedHeaderVerifier.paddle, summary: "Paddle-Signature: ts=…;h1=<hex>; HMAC-SHA256 of \"{ts}:{body}\"", tolerance: 300,
                        id: "body.event_id", type: "body.event_type", time: "body.occurred_at | iso8601"))
        add(timestamped(TimestampedHeaderVerifier.workos, summary: "WorkOS-Signature: t=<ms>, v1=<hex>; HMAC-SHA256 of \"{t}.{body}\"", tolerance: 180,
                        id: "body.id", type: "body.event", time: "body.created_at | iso8601"))
        add(timestamped(TimestampedHeaderVerifier.recurly, summary: "recurly-signature: <ms>,<hex>[,<hex>]; HMAC-SHA256 of \"{ms}.{body}\"", tolerance: 300,
                        id: "body.id", type: "{{ body.object_type }}.{{ body.event_type }}", time: "body.event_time | iso8601"))
        add(Definition(
            name: "standard-webhooks",
            summary: "webhook-id/-timestamp/-signature (or svix-*); v1,<base64> HMAC-SHA256 of \"{id}.{ts}.{body}\"",
            defaultTolerance: StandardWebhooksVerifier.defaultTolerance,
            defaultID: "coalesce(headers.webhook-id, headers.svix-id)", defaultType: "body.type",
            defaultTime: "coalesce(headers.webhook-timestamp, headers.svix-timestamp) | unix_seconds",
            defaultSecretEncoding: .base64, options: common,
            make: { _, secrets, tolerance in StandardWebhooksVerifier(secrets: secrets, tolerance: tolerance) }))
        add(preset(HMACVerifier.orb, summary: "X-Orb-Signature: v1=<hex> with X-Orb-Timestamp; HMAC-SHA256 of \"v1:{ts}:{body}\"",
                   tolerance: 300, id: "body.id", type: "body.type", time: "body.created_at | iso8601"))
        // GitHub and Shopify sign the body only: their delivery ids are headers outside the signature, so the
        // webhook id is the body's digest (a retry sends the same bytes; a replay with another delivery id is
        // still a duplicate).
        add(preset(HMACVerifier.github, summary: "X-Hub-Signature-256: sha256=<hex> of the body (GitHub, Outseta)", tolerance: nil,
                   id: "webhook.body_sha256", type: "headers.x-github-event", time: nil,
                   delivery: ["X-GitHub-Delivery", "X-GitHub-Event", "X-GitHub-Hook-ID", "X-GitHub-Hook-Installation-Target-ID",
                              "X-GitHub-Hook-Installation-Target-Type"]))
        add(preset(HMACVerifier.shopify, summary: "X-Shopify-Hmac-Sha256: <base64> of the body", tolerance: nil,
                   id: "webhook.body_sha256", type: "headers.x-shopify-topic",
                   time: "headers.x-shopify-triggered-at | iso8601",
                   delivery: ["X-Shopify-Topic", "X-Shopify-Event-Id", "X-Shopify-Webhook-Id", "X-Shopify-Triggered-At",
                              "X-Shopify-Shop-Domain", "X-Shopify-API-Version"]))
        add(preset(HMACVerifier.lemonSqueezy, summary: "X-Signature: <hex> of the body", tolerance: nil,
                   // No event id: the event's identity is its name, its object and that object's update time, so
                   // the same event re-serialised (keys reordered, spacing) is still a duplicate.
                   // From the body only: the X-Event-Name header is not signed.
                   id: "{{ body.meta.event_name }}:{{ body.data.type }}:{{ body.data.id }}:{{ coalesce(body.data.attributes.updated_at, body.data.attributes.created_at) }}",
                   type: "coalesce(body.meta.event_name, headers.x-event-name)",
                   time: "body.data.attributes.updated_at | iso8601", delivery: ["X-Event-Name"]))
        add(Definition(
            name: "basic-auth", summary: "Authorization: Basic (Chargebee); username and password compared in constant time",
            defaultTolerance: nil, defaultID: "body.id", defaultType: "body.event_type", defaultTime: "body.occurred_at | unix_seconds",
            defaultSecretEncoding: .raw, options: common + ["username"], referenceOptions: ["username"],
            make: { options, secrets, _ throws(OptionError) in
                guard let username = options["username"] else {
                    throw OptionError(option: "username", message: "basic-auth needs 'username'",
                                      hint: "name the environment variable holding it, e.g. 'username: CHARGEBEE_WEBHOOK_USERNAME'")
                }
                return CredentialVerifier(kind: .basic(usernames: [WebhookSecret(label: "username", value: username)]), secrets: secrets)
            }))
        add(Definition(
            name: "bearer-token", summary: "a static token in Authorization (optionally 'Bearer …') or another header (Auth0 log streams)",
            defaultTolerance: nil, defaultID: "body.id", defaultType: "body.type", defaultTime: nil,
            defaultSecretEncoding: .raw, options: common + ["header"],
            make: { options, secrets, _ in CredentialVerifier(kind: .bearer(header: options["header"] ?? "Authorization"), secrets: secrets) }))
        add(Definition(
            name: "hmac", summary: "generic: header, algorithm, encoding, prefix, timestamp header and signed template",
            defaultTolerance: 300, defaultID: "body.id", defaultType: "body.type", defaultTime: nil,
            defaultSecretEncoding: .raw,
            options: common + ["header", "algorithm", "encoding", "prefix", "separator", "timestamp_header", "timestamp_format", "id_header", "signed"],
            make: { options, secrets, tolerance throws(OptionError) in
                try HMACVerifier(format: genericFormat(options), secrets: secrets, tolerance: tolerance)
            }))
        return all
    }()

    static func genericFormat(_ options: Options) throws(OptionError) -> HMACVerifier.Format {
        guard let header = options["header"] else {
            throw OptionError(option: "header", message: "the hmac scheme needs 'header'", hint: "name the header carrying the signature, e.g. 'header: X-Signature'")
        }
        var format = HMACVerifier.Format(scheme: "hmac", header: header)
        if let a = options["algorithm"] {
            guard let algorithm = Crypto.Algorithm(rawValue: a.lowercased()) else {
                throw OptionError(option: "algorithm", message: "unknown algorithm '\(a)'", hint: "use sha1, sha256 or sha512")
            }
            format.algorithm = algorithm
        }
        if let e = options["encoding"] {
            guard let encoding = HMACVerifier.Encoding(rawValue: e.lowercased()) else {
                throw OptionError(option: "encoding", message: "unknown encoding '\(e)'", hint: "use hex or base64")
            }
            format.encoding = encoding
        }
        format.prefix = options["prefix"] ?? ""
        if let s = options["separator"] {
            guard s.count == 1 else { throw OptionError(option: "separator", message: "separator must be one character", hint: "e.g. ' ' or ','") }
            format.listSeparator = s.first
        }
        format.timestampHeader = options["timestamp_header"]
        format.idHeader = options["id_header"]
        if let f = options["timestamp_format"] {
            guard let tf = HMACVerifier.TimestampFormat(rawValue: f.lowercased()) else {
                throw OptionError(option: "timestamp_format", message: "unknown timestamp_format '\(f)'", hint: "use seconds, milliseconds or iso8601")
            }
            format.timestampFormat = tf
        }
        if let template = options["signed"] {
            guard let parts = HMACVerifier.Format.parseTemplate(template) else {
                throw OptionError(option: "signed", message: "signed template '\(template)' is not valid",
                                  hint: "use {body}, {timestamp} and {id} with literal text between, e.g. '{timestamp}.{body}'")
            }
            if parts.contains(.timestamp) && format.timestampHeader == nil {
                throw OptionError(option: "signed", message: "the template uses {timestamp} but no timestamp_header is set", hint: "add 'timestamp_header: X-…-Timestamp'")
            }
            if parts.contains(.id) && format.idHeader == nil {
                throw OptionError(option: "signed", message: "the template uses {id} but no id_header is set", hint: "add 'id_header: X-…-Id'")
            }
            format.signed = parts
        } else if format.timestampHeader != nil {
            format.signed = [.timestamp, .text("."), .body]
        }
        return format
    }
}
