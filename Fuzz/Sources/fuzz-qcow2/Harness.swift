import FuzzSupport
import KDCTFormats

/// libFuzzer's per-input callback: the input bytes as a qcow2 image (see FuzzSupport.ImageFuzzer).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    ImageFuzzer.run(format: .qcow2, data: data, size: size)
}

/// The process entry point. SwiftPM links an executable's `main` to `<module>_main`; it hands over to
/// libFuzzer's driver (libFuzzer's own `main` is then not linked).
@_cdecl("fuzz_qcow2_main")
public func fuzzMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    FuzzerDriver.run(argc: argc, argv: argv, callback: fuzzOneInput)
}
