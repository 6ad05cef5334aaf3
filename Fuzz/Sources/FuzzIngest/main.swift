import Foundation
import FuzzDriver
import FuzzHarness

/// One ingestor for the whole run: the shipped routes and a SQLite store in memory-backed storage when there is some.
let ingestor: Ingestor = {
    let base = FileManager.default.fileExists(atPath: "/dev/shm") ? "/dev/shm" : NSTemporaryDirectory()
    let directory = base + "/koala-router-fuzz-\(ProcessInfo.processInfo.processIdentifier)"
    try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    return blocking { try! await Ingestor(directory: directory) }
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    check(data, size) { bytes in blocking { await ingestor.run(bytes) } }
}

/// SwiftPM links an executable's entry point as `<target>_main`; it hands control to libFuzzer's driver.
@_cdecl("FuzzIngest_main")
public func fuzzerMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt { runFuzzer(argc, argv, fuzz) }
