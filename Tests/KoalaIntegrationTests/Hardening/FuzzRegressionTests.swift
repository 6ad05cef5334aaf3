import Foundation
import FuzzHarness
import Testing
@testable import KoalaApp
@testable import KoalaCore
@testable import KoalaDelivery
@testable import KoalaStore
import KoalaTestSupport

/// Every input the fuzz targets keep, seeds and past findings alike (`Fuzz/Corpus/<target>`,
/// `Fuzz/Regressions/<target>`), run through the same harness on every `swift test`: a finding fixed once
/// stays fixed without a fuzzer in the loop.
@Suite("Fuzz corpus and regressions")
struct FuzzRegressionTests {
    static func inputs(_ target: String) -> [(name: String, bytes: [UInt8])] {
        var folders = ["Fuzz/Corpus/\(target)", "Fuzz/Regressions/\(target)"]
        if target == "json" { folders += ["routes/samples/stripe", "routes/samples/clerk", "routes/samples/paddle"] }
        if target == "rules" { folders.append("routes") }
        var out: [(String, [UInt8])] = []
        for folder in folders {
            let path = repositoryRoot + "/" + folder
            for name in ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted() {
                var isDirectory: ObjCBool = false
                guard FileManager.default.fileExists(atPath: path + "/" + name, isDirectory: &isDirectory), !isDirectory.boolValue,
                      let data = FileManager.default.contents(atPath: path + "/" + name) else { continue }
                out.append((folder + "/" + name, [UInt8](data)))
            }
        }
        return out
    }

    @Test(arguments: ["json", "expression", "verify", "rules"])
    func keptInputsRaiseNoFinding(target: String) {
        let inputs = Self.inputs(target)
        #expect(inputs.count >= 5, "no inputs for \(target)")
        for input in inputs {
            let finding: String? = switch target {
            case "json": FuzzHarness.json(input.bytes)
            case "expression": FuzzHarness.expression(input.bytes)
            case "verify": FuzzHarness.verify(input.bytes)
            default: FuzzHarness.rules(input.bytes)
            }
            #expect(finding == nil, "\(input.name): \(finding ?? "")")
        }
    }

    @Test func keptIngestInputsRaiseNoFinding() async throws {
        let ingestor = try await Ingestor(directory: temporaryDirectory())
        let inputs = Self.inputs("ingest")
        #expect(inputs.count >= 9)
        for input in inputs {
            let finding = await ingestor.run(input.bytes)
            #expect(finding == nil, "\(input.name): \(finding ?? "")")
        }
    }

    /// The published vectors among the verify seeds do verify (so the fuzzer starts from the success path).
    @Test func theVectorSeedsVerify() throws {
        for input in Self.inputs("verify") where input.name.hasSuffix("-vector") {
            #expect(FuzzHarness.verifies(input.bytes), "\(input.name) does not verify")
        }
    }
}
