import Foundation
import HTTPTypes
import KoalaApp
import KoalaCore
import KoalaStore
import Logging

/// The fuzz targets' bodies, one function per target. Each takes one input and returns a finding (what went
/// wrong) or nil; a trap inside is a finding too. libFuzzer drives them from `Fuzz/` (scripts/fuzz), and the
/// test suite runs every kept input (seeds and past findings) through them on each `swift test`.
public enum FuzzHarness {
    public static let targets = ["json", "expression", "verify", "ingest", "rules"]

    /// The repository root, for the shipped routes.
    public static let repositoryRoot: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()

    // MARK: json

    /// Any bytes: parsing never traps; the tape accepts what the reference tree parser accepts, reads the same values
    /// (also with numbers as written) and refuses the rest with the same error; and what parses encodes to JSON that
    /// parses to the same encoding.
    public static func json(_ bytes: [UInt8]) -> String? {
        if let difference = compareWithReference(bytes) { return difference }
        guard let value = try? JSONValue.parse(bytes) else { return nil }
        let encoded = value.encoded()
        guard let again = try? JSONValue.parse(Array(encoded.utf8)) else { return "its encoding is not JSON: \(LogText.bounded(encoded, limit: 200))" }
        guard again.encoded() == encoded else { return "encoding is not stable: \(LogText.bounded(encoded, limit: 200))" }
        _ = value.textValue
        _ = value.doubleValue
        _ = LogText.preview(value)
        return nil
    }

    /// How the tape and the reference parser differ on `bytes`, if they do.
    public static func compareWithReference(_ bytes: [UInt8]) -> String? {
        let shown = LogText.bounded(String(decoding: bytes, as: UTF8.self), limit: 200)
        for asWritten in [false, true] {
            let reference = bytes.withUnsafeBufferPointer { buffer in
                Result { () throws(ReferenceJSONParser.Failure) -> JSONValue in try ReferenceJSONParser.parse(buffer, numbersAsWritten: asWritten) }
            }
            let tape = Result { () throws(JSONValue.ParseError) -> JSONValue in
                let tape = try JSONTape.parse(bytes)
                return asWritten ? tape.readingNumbersAsWritten().value : tape.value
            }
            switch (reference, tape) {
            case (.success(let a), .success(let b)):
                if a != b { return "the tape reads \(LogText.preview(b)), the reference \(LogText.preview(a)) (numbers as written: \(asWritten)): \(shown)" }
            case (.failure(let a), .failure(let b)):
                if a.description != b.description { return "the tape says '\(b)', the reference '\(a)': \(shown)" }
            case (.success, .failure(let b)):
                return "the tape refuses what the reference accepts ('\(b)'): \(shown)"
            case (.failure(let a), .success):
                return "the tape accepts what the reference refuses ('\(a)'): \(shown)"
            }
        }
        return nil
    }

    // MARK: expression

    static let defaultBody: JSONValue = ["data": ["object": ["email": "Ada@Acme-Corp.io", "amount": 4900, "items": [["id": 1], ["id": "x"]]]]]

    /// `expression text` NUL `JSON body`: parsing, evaluating and describing an expression or condition never traps,
    /// and reading the body from its tape (as ingest does) gives what reading it from its tree gives.
    public static func expression(_ bytes: [UInt8]) -> String? {
        let split = bytes.firstIndex(of: 0) ?? bytes.endIndex
        let text = String(decoding: bytes[..<split], as: UTF8.self)
        let bodyBytes = split < bytes.endIndex ? Array(bytes[(split + 1)...]) : []
        let parsed = try? JSONTape.parse(bodyBytes)
        let body = parsed?.value ?? defaultBody
        let tape = parsed ?? (try? JSONTape.parse(Array(defaultBody.encoded().utf8))) ?? .null
        let headers = ["x-event": "a.b", "content-type": "application/json"]
        let webhook: JSONValue = ["id": "evt_1", "type": "invoice.paid", "time": "2024-11-29T09:12:00.000Z"]
        let person: JSONValue = ["email": "ada@acme-corp.io"]
        let context = EvaluationContext(body: body, headers: headers, webhook: webhook, person: person)
        let onTape = EvaluationContext(body: tape, headers: headers, webhook: webhook, person: person)
        if var parser = try? ExpressionParser(text), let expression = try? parser.parseComplete() {
            let value = expression.evaluate(in: context)
            _ = value?.encoded()
            _ = expression.description
            _ = expression.recalls
            let fromTape = expression.evaluate(in: onTape)
            if fromTape != value {
                return "\(expression) reads \(fromTape.map { LogText.preview($0) } ?? "nothing") from the tape, \(value.map { LogText.preview($0) } ?? "nothing") from the tree"
            }
        }
        if var parser = try? ExpressionParser(text), let condition = try? parser.parseCompleteCondition() {
            let holds = condition.evaluate(in: context)
            _ = condition.explain(in: context)
            _ = condition.description
            if condition.evaluate(in: onTape) != holds { return "\(condition) is \(!holds) on the tape, \(holds) on the tree" }
        }
        _ = ExpressionParser.looksLikeExpression(text)
        return nil
    }

    // MARK: verify

    /// Each scheme's secret: the published vectors' where there is one, so the seeds are real signed requests.
    static let verifySecrets: [String: [UInt8]] = [
        "stripe": Array("whsec_test_secret".utf8),
        "paddle": Array("VALID_SECRET".utf8),
        "workos": Array("1lyKDzhJjuCkIscIWqkSe4YsQ".utf8),
        "recurly": Array("354fab5bd35f5a0d50845ee7e30165244468b13c2c343f104e4e730a59326d9d".utf8),
        "standard-webhooks": StandardWebhooksVerifier.decodeSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")!,
        "github": Array("It's a Secret to Everybody".utf8),
        "shopify": Array("shpss_koala_router_test".utf8),
        "lemon-squeezy": Array("koala-lemon-secret".utf8),
        "orb": Array("c-UGKYdnhHh436B_sMouYAPUvXyWpzOdunZBV5dFSD8".utf8),
        "hmac": Array("generic-secret".utf8),
        "basic-auth": Array("s3cret:with:colons".utf8),
        "bearer-token": Array("tok_123".utf8),
    ]
    package static let hmacOptions: Schemes.Options = ["header": "X-Sig", "algorithm": "sha512", "encoding": "base64", "prefix": "sha512=",
                                                      "timestamp_header": "X-Ts", "id_header": "X-Delivery", "signed": "{timestamp}:{id}:{body}"]

    static let verifiers: [String: any SignatureVerifier] = {
        var out: [String: any SignatureVerifier] = [:]
        for (name, definition) in Schemes.all {
            var options: Schemes.Options = [:]
            if name == "hmac" { options = hmacOptions }
            if name == "basic-auth" { options["username"] = "koala" }
            let secret = WebhookSecret(label: "FUZZ_SECRET", key: verifySecrets[name] ?? Array("fuzz".utf8))
            out[name] = try? definition.verifier(options: options, secrets: [secret], tolerance: definition.defaultTolerance ?? 0)
        }
        return out
    }()

    /// Schemes that sign the body (basic-auth and bearer-token carry a credential instead).
    static let bodySigning: Set<String> = Set(Schemes.all.keys).subtracting(["basic-auth", "bearer-token"])

    /// First line `scheme unix-seconds check|sign`, then header lines, a blank line and the body.
    /// `check`: verification never traps, and a request that verifies stops verifying when one body byte changes.
    /// `sign`: the harness signs the body itself (replacing those headers): it must verify.
    public static func verify(_ bytes: [UInt8]) -> String? {
        let (head, body) = splitHead(bytes)
        var lines = head.split(separator: "\n", omittingEmptySubsequences: false).map { String($0) }
        let first = lines.isEmpty ? [] : lines.removeFirst().split(separator: " ").map(String.init)
        let names = Schemes.all.keys.sorted()
        let scheme = first.first.flatMap { Schemes.all[$0] != nil ? $0 : nil } ?? names[head.utf8.count % names.count]
        let now = Date(timeIntervalSince1970: first.count > 1 ? Double(first[1]).flatMap { Timestamps.representableSeconds.contains($0) ? $0 : nil } ?? 1_732_871_520 : 1_732_871_520)
        let sign = first.count > 2 && first[2] == "sign"
        guard let verifier = verifiers[scheme] else { return "no verifier for \(scheme)" }
        var headers = parseHeaders(lines)
        if sign {
            let signed = FuzzSigner.headers(scheme: scheme, key: verifySecrets[scheme] ?? Array("fuzz".utf8), body: body, now: now, id: "msg_fuzz_1")
            let replaced = FuzzSigner.names(signed, scheme: scheme)
            headers = HTTPFields(headers.filter { !replaced.contains($0.name.canonicalName) })
            for (name, value) in signed { headers.append(HTTPField(name: HTTPField.Name(name)!, value: value)) }
            if case .failure(let failure) = verifier.verify(headers: headers, body: body, now: now) {
                return "\(scheme): a request signed as the provider does was refused: \(failure.reason)"
            }
            return nil
        }
        guard case .success = verifier.verify(headers: headers, body: body, now: now), bodySigning.contains(scheme) else { return nil }
        var other = body
        if other.isEmpty { other = [0x20] } else { other[other.count / 2] ^= 0x01 }
        if case .success = verifier.verify(headers: headers, body: other, now: now) {
            return "\(scheme): a changed body still verifies"
        }
        return nil
    }

    /// Whether a verify input in `check` mode verifies as given (the published vectors must).
    public static func verifies(_ bytes: [UInt8]) -> Bool {
        let (head, body) = splitHead(bytes)
        var lines = head.split(separator: "\n", omittingEmptySubsequences: false).map { String($0) }
        guard !lines.isEmpty else { return false }
        let first = lines.removeFirst().split(separator: " ").map(String.init)
        guard first.count == 3, let verifier = verifiers[first[0]], let seconds = Double(first[1]) else { return false }
        if case .success = verifier.verify(headers: parseHeaders(lines), body: body, now: Date(timeIntervalSince1970: seconds)) { return true }
        return false
    }

    static func splitHead(_ bytes: [UInt8]) -> (String, [UInt8]) {
        var i = 0
        while i + 1 < bytes.count {
            if bytes[i] == 0x0A && bytes[i + 1] == 0x0A { return (String(decoding: bytes[..<i], as: UTF8.self), Array(bytes[(i + 2)...])) }
            i += 1
        }
        return (String(decoding: bytes, as: UTF8.self), [])
    }

    static func parseHeaders(_ lines: [String]) -> HTTPFields {
        var headers = HTTPFields()
        for line in lines {
            guard let colon = line.firstIndex(of: ":"), let name = HTTPField.Name(String(line[..<colon]).trimmingCharacters(in: .whitespaces)) else { continue }
            headers.append(HTTPField(name: name, value: String(line[line.index(after: colon)...]).trimmingCharacters(in: .whitespaces)))
        }
        return headers
    }

    // MARK: rules

    /// Any text as a rule file: a table, or errors that each name a line and column and say what is wrong.
    public static func rules(_ bytes: [UInt8]) -> String? {
        let text = String(decoding: bytes, as: UTF8.self)
        do {
            let table = try RuleLoader(environment: Ingestor.environment).load(files: [("routes/fuzz.yaml", text)])
            for source in table.sources.values {
                for route in source.routes { _ = route.recalls; _ = route.condition?.description }
            }
        } catch {
            for e in error.errors where e.line < 1 || e.column < 1 || e.message.isEmpty || e.file != "routes/fuzz.yaml" {
                return "an error without a position or message: \(e)"
            }
        }
        return nil
    }
}

/// Runs async work to completion from synchronous code (libFuzzer calls its target synchronously, on a
/// thread of its own, never on Swift's cooperative pool).
public func blocking<T: Sendable>(_ work: @escaping @Sendable () async -> T) -> T {
    let box = BlockingBox<T>()
    let done = DispatchSemaphore(value: 0)
    Task {
        box.value = await work()
        done.signal()
    }
    done.wait()
    return box.value!
}

private final class BlockingBox<T>: @unchecked Sendable {
    var value: T?
}

