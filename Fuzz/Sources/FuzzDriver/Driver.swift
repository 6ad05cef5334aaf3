@_silgen_name("LLVMFuzzerRunDriver")
private func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
) -> CInt

/// Runs libFuzzer's driver with the process's arguments over `target`. SwiftPM links an executable's entry
/// point as `<target>_main`, so each fuzz target defines that and calls this instead of relying on libFuzzer's `main`.
public func runFuzzer(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?,
                      _ target: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv, target)
}

/// One libFuzzer input through a harness function: a finding stops the run as a crash, which libFuzzer keeps.
public func check(_ data: UnsafePointer<UInt8>?, _ size: Int, _ harness: ([UInt8]) -> String?) -> CInt {
    let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    if let finding = harness(bytes) { fatalError("finding: \(finding)") }
    return 0
}
