import Foundation
import Yams

/// Reading a source's verification: its scheme, secrets and which id is signed.
extension FileParser {
    /// What a scheme, with its options, reads and signs, known whether or not its secrets are set.
    struct VerifierShape {
        var credentialHeaders: [String] = []
        var signedHeaders: [String] = []
        var signsBody = true

        init() {}

        init(_ verifier: any SignatureVerifier) {
            credentialHeaders = verifier.credentialHeaders
            signedHeaders = verifier.signedHeaders
            signsBody = verifier.signsBody
        }
    }

    /// Builds the source's verifier, or says why the source is disabled (a secret is not set), with the
    /// headers the scheme reads credentials from; nil when the verify block has errors (recorded).
    mutating func buildVerifier(_ definition: Schemes.Definition, verify: [String: Node], verifyNode: Node, source: String)
        -> (state: SourceState, shape: VerifierShape)?
    {
        var options: Schemes.Options = [:]
        var optionLocations: [String: SourceLocation] = [:]
        for (key, node) in verify where !["scheme", "secrets", "tolerance"].contains(key) {
            guard definition.options.contains(key) else {
                errors.append(location(node).error("'\(key)' is not an option of the \(definition.name) scheme",
                    hint: "options of \(definition.name): \(definition.options.joined(separator: ", "))"))
                continue
            }
            guard case .scalar(let scalar) = node else {
                errors.append(location(node).error("verify.\(key) must be text", hint: "write a single value"))
                continue
            }
            options[key] = scalar.string
            optionLocations[key] = location(node)
        }
        var tolerance = definition.defaultTolerance ?? 0
        if let toleranceNode = verify["tolerance"] {
            if definition.defaultTolerance == nil {
                errors.append(location(toleranceNode).error("the \(definition.name) scheme signs no timestamp, so 'tolerance' has no effect",
                    hint: "remove it; replays of such webhooks are stopped by the webhook-id dedupe"))
            } else if let seconds = duration(toleranceNode, what: "verify.tolerance") {
                tolerance = seconds
            }
        }
        var encoding = definition.defaultSecretEncoding
        if let text = options.removeValue(forKey: "secret_encoding") {
            if let e = Schemes.SecretEncoding(rawValue: text) {
                encoding = e
            } else {
                errors.append((optionLocations["secret_encoding"] ?? location(verifyNode)).error("unknown secret_encoding '\(text)'",
                    hint: "use raw (the secret's bytes), base64 (whsec_… decoded) or hex"))
            }
        }
        let secretNames = secretReferences(verify["secrets"], parent: verifyNode, source: source)
        var missing: [String] = []
        for key in definition.referenceOptions {
            guard let reference = options[key] else { continue }
            guard Self.isEnvironmentName(reference) else {
                errors.append((optionLocations[key] ?? location(verifyNode)).error("verify.\(key) names an environment variable, it is not the value itself",
                    hint: "put the value in an environment variable and write its name here"))
                continue
            }
            if let value = resolveSecret(reference), !value.isEmpty { options[key] = value } else { missing.append(reference) }
        }
        // Built without secrets first: it checks the options and names the credential headers even when
        // the source ends up disabled.
        let shape: VerifierShape
        do {
            shape = VerifierShape(try definition.make(options, [], tolerance))
        } catch {
            errors.append((optionLocations[error.option] ?? location(verifyNode)).error(error.message, hint: error.hint))
            return nil
        }
        guard !secretNames.isEmpty else {
            if verify["secrets"] == nil { return nil }  // the missing key is an error already
            let reason = "source '\(source)' is disabled: verify.secrets names no environment variable"
            warnings.append("\(path): \(reason)")
            return (.disabled(reason: reason), shape)
        }
        var secrets: [WebhookSecret] = []
        // Set, but no usable key: not valid in the encoding, or too short to resist guessing. Each is an error
        // `check` reports (the setting is wrong, not merely absent); the source is disabled when none is usable.
        var unusable: [String] = []
        for reference in secretNames {
            // An empty value is no value (`NAME=` in an env file); `whsec_` alone is a secret with an empty key.
            guard let value = resolveSecret(reference), !value.isEmpty else { continue }
            let problem: String
            if let key = encoding.decode(value) {
                if key.count >= Self.minimumSecretBytes {
                    secrets.append(WebhookSecret(label: reference, key: key))
                    continue
                }
                problem = "\(reference) is set but its key is \(key.count) byte\(key.count == 1 ? "" : "s") long (\(encoding.keyDescription)); a signing secret needs at least \(Self.minimumSecretBytes): copy the whole secret from the provider's dashboard, or choose a longer one there"
            } else {
                problem = "\(reference) is not a valid \(encoding.rawValue) secret (\(encoding.keyDescription)): copy the whole secret from the provider's dashboard"
            }
            unusable.append(reference)
            secretErrors.append("\(path): source '\(source)': \(problem)")
        }
        if secrets.isEmpty || !missing.isEmpty {
            let reason: String
            if let bad = unusable.first, secrets.isEmpty {
                reason = "source '\(source)' is disabled: \(bad) is not a usable \(encoding.rawValue) secret (at least \(Self.minimumSecretBytes) bytes of key)"
            } else if let unreadable = (missing + secretNames).compactMap({ unreadableSecrets[$0] }).first {
                reason = "source '\(source)' is disabled: \(unreadable)"
            } else {
                let needed = missing.first ?? secretNames[0]
                reason = "source '\(source)' is disabled: set \(needed) (or \(needed)_FILE)"
            }
            warnings.append("\(path): \(reason)")
            return (.disabled(reason: reason), shape)
        }
        do {
            return (.enabled(try definition.make(options, secrets, tolerance)), shape)
        } catch {
            errors.append((optionLocations[error.option] ?? location(verifyNode)).error(error.message, hint: error.hint))
            return nil
        }
    }
}
