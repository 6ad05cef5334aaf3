import Foundation
import HTTPTypes
import Testing
@testable import KoalaCore
import KoalaTestSupport

@Suite("Stripe signature verification")
struct StripeVerifierTests {
    // Vectors computed with Stripe's official Python library, stripe 16.1.0 (scripts/stripe-vector.py):
    // Stripe publishes no fixed vector, so this uses Stripe's own signing code rather than ours.
    // The first uses stripe-python's DUMMY_WEBHOOK_PAYLOAD and test secret from tests/test_webhook.py.
    static let dummyPayload = "{\n  \"id\": \"evt_test_webhook\",\n  \"object\": \"event\",\n  \"data\": { \"object\": { \"id\": \"rdr_123\", \"object\": \"terminal.reader\" } }\n}"
    static let dummyHeader = "t=12345,v1=07b1ede164afb7b5de91267ffa656f568c65d6e0783ce0ac55ee094643578eda"
    static let invoicePayload = #"{"id":"evt_1QkoalaVector","object":"event","type":"invoice.paid","created":1732871520,"data":{"object":{"id":"in_1","customer_email":"ada@analytical-engines.io","amount_paid":4900,"currency":"usd"}}}"#
    static let invoiceHeader = "t=1732871520,v1=ed53e175f187675b8716148e294d5b823ebe5fae6cb4336d1cadcb9563e0c508"

    func verify(_ header: String?, _ body: String, secrets: [String] = ["whsec_test_secret"], now: Double, tolerance: Double = 300) -> Result<Verification, VerificationFailure> {
        var headers = HTTPFields()
        if let header { headers[HTTPField.Name("Stripe-Signature")!] = header }
        let verifier = TimestampedHeaderVerifier(format: TimestampedHeaderVerifier.stripe,
                                                 secrets: secrets.enumerated().map { WebhookSecret(label: "SECRET_\($0.offset)", value: $0.element) },
                                                 tolerance: tolerance)
        return verifier.verify(headers: headers, body: Array(body.utf8), now: Date(timeIntervalSince1970: now))
    }

    @Test func officialLibraryVectorsVerify() {
        #expect(verify(Self.dummyHeader, Self.dummyPayload, now: 12345 + 10) == .success(Verification(secretLabel: "SECRET_0")))
        #expect(verify(Self.invoiceHeader, Self.invoicePayload, secrets: ["whsec_koala_router_test_vector"], now: 1_732_871_520)
                == .success(Verification(secretLabel: "SECRET_0")))
    }

    @Test func ourSignerMatchesTheOfficialLibrary() {
        #expect(StripeVerifier.sign(body: Array(Self.dummyPayload.utf8), secret: "whsec_test_secret", timestamp: 12345) == Self.dummyHeader)
    }

    @Test func oneFlippedByteInTheBodyFails() {
        var body = Array(Self.dummyPayload.utf8)
        body[10] ^= 0x01
        #expect(verify(Self.dummyHeader, String(decoding: body, as: UTF8.self), now: 12345) == .failure(.signatureMismatch))
        #expect(verify(Self.dummyHeader, Self.dummyPayload + " ", now: 12345) == .failure(.signatureMismatch))
    }

    @Test func wrongSecretFails() {
        #expect(verify(Self.dummyHeader, Self.dummyPayload, secrets: ["whsec_test_secreT"], now: 12345) == .failure(.signatureMismatch))
        // The key is the whole secret string, prefix included.
        #expect(verify(Self.dummyHeader, Self.dummyPayload, secrets: ["test_secret"], now: 12345) == .failure(.signatureMismatch))
    }

    @Test func staleAndFutureTimestampsFail() {
        #expect(verify(Self.dummyHeader, Self.dummyPayload, now: 12345 + 301) == .failure(.timestampOutsideTolerance))
        #expect(verify(Self.dummyHeader, Self.dummyPayload, now: 12345 + 300) == .success(Verification(secretLabel: "SECRET_0")))
        #expect(verify(Self.dummyHeader, Self.dummyPayload, now: 12345 - 301) == .failure(.timestampOutsideTolerance))
        #expect(verify(Self.dummyHeader, Self.dummyPayload, now: 12345 + 3000, tolerance: 3600) == .success(Verification(secretLabel: "SECRET_0")))
    }

    @Test func missingAndMalformedHeaders() {
        #expect(verify(nil, Self.dummyPayload, now: 12345) == .failure(.missingHeader("Stripe-Signature")))
        #expect(verify("garbage", Self.dummyPayload, now: 12345) == .failure(.malformedHeader("Stripe-Signature")))
        #expect(verify("t=12345", Self.dummyPayload, now: 12345) == .failure(.malformedHeader("Stripe-Signature")))
        #expect(verify("t=abc,v1=07b1", Self.dummyPayload, now: 12345) == .failure(.malformedHeader("Stripe-Signature")))
        #expect(verify("t=12345,v1=zz", Self.dummyPayload, now: 12345) == .failure(.malformedHeader("Stripe-Signature")))
    }

    @Test func otherSchemesAreIgnoredAndAnyV1MayMatch() {
        let v1 = String(Self.dummyHeader.split(separator: "v1=")[1])
        #expect(verify("t=12345,v0=\(v1)", Self.dummyPayload, now: 12345) == .failure(.malformedHeader("Stripe-Signature")))
        #expect(verify("t=12345,v1=\(String(repeating: "0", count: 64)),v1=\(v1),v0=abc", Self.dummyPayload, now: 12345)
                == .success(Verification(secretLabel: "SECRET_0")))
    }

    @Test func rotatedSecretVerifiesAndIsReportedByLabel() {
        #expect(verify(Self.dummyHeader, Self.dummyPayload, secrets: ["whsec_new", "whsec_test_secret"], now: 12345)
                == .success(Verification(secretLabel: "SECRET_1")))
    }

    @Test func secretsNeverPrint() {
        let secret = WebhookSecret(label: "STRIPE_WEBHOOK_SECRET", value: "whsec_very_secret")
        #expect(!"\(secret)".contains("very_secret"))
        #expect(!String(reflecting: secret).contains("very_secret"))
    }
}

@Suite("OpenSSL primitives")
struct CryptoTests {
    @Test func hmacMatchesPublishedVectors() {
        // GitHub's documented example (docs: validating-webhook-deliveries).
        #expect(Hex.encode(Crypto.hmac(.sha256, key: "It's a Secret to Everybody", data: "Hello, World!"))
                == "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17")
        // RFC 4231 test case 2.
        #expect(Hex.encode(Crypto.hmac(.sha256, key: "Jefe", data: "what do ya want for nothing?"))
                == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        #expect(Hex.encode(Crypto.hmac(.sha512, key: "Jefe", data: "what do ya want for nothing?"))
                == "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737")
        #expect(Hex.encode(Crypto.hmac(.sha256, key: "", data: "")) == "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad")
    }

    @Test func constantTimeEquality() {
        #expect(Crypto.constantTimeEquals([1, 2, 3] as [UInt8], [1, 2, 3] as [UInt8]))
        #expect(!Crypto.constantTimeEquals([1, 2, 3] as [UInt8], [1, 2, 4] as [UInt8]))
        #expect(!Crypto.constantTimeEquals([1, 2, 3] as [UInt8], [1, 2] as [UInt8]))
    }

    @Test func hexRoundTrip() {
        #expect(Hex.decode("00ffA0") == [0, 255, 160])
        #expect(Hex.decode("abc") == nil)
        #expect(Hex.decode("zz") == nil)
        #expect(Hex.encode([0, 255, 160]) == "00ffa0")
    }

    /// Signature headers are split by byte when they are ASCII; that path gives what splitting by character gives,
    /// for the real shapes and for 20,000 random headers over the characters that matter.
    @Test func splittingAHeaderByByteAgreesWithSplittingByCharacter() {
        var headers = ["t=1,v1=ab", "t=1,v1=ab,v1=cd,v0=ef", " t = 1 , v1 = ab ", "t=,v1=ab", "=1,v1=ab", "t==1,v1=a=b", ",,t=1,,v1=ab,,",
                       "v1=ab", "t=1", "", "t=1;h1=ab", "ts=1;h1=ab;h1=cd",
                       // An item that begins with '=' has no key (the random headers found these once in 20,000).
                       "=t=1,v1=ab", "t=1,=v1=ab", "=ts=1;h1=ab"]
        var generator = SystemRandomNumberGenerator()
        let alphabet = Array("tv1h=,; a")
        for _ in 0..<20_000 {
            headers.append(String((0..<Int.random(in: 0...16, using: &generator)).map { _ in alphabet.randomElement(using: &generator)! }))
        }
        for header in headers {
            for (separator, t, v) in [(Character(","), "t", "v1"), (Character(";"), "ts", "h1")] {
                let bytes = TimestampedHeaderVerifier.keyValues(header, itemSeparator: separator, timestampKey: t, signatureKey: v)
                let characters = TimestampedHeaderVerifier.keyValuesByCharacter(header, itemSeparator: separator, timestampKey: t, signatureKey: v)
                #expect(bytes?.timestamp == characters?.timestamp && bytes?.signatures == characters?.signatures, "\(header)")
            }
        }
    }
}
