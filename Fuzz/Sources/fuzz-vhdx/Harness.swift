import FuzzSupport
import KDCTFormats

/// libFuzzer's per-input callback: the input describes a sparse vhdx file (see FuzzSupport.ImageFuzzer): a VHDX
/// is at least 4 MiB of 1 MiB-aligned regions, too large to fuzz byte for byte.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    ImageFuzzer.run(format: .vhdx, data: data, size: size, sparse: true)
}

/// The process entry point. SwiftPM links an executable's `main` to `<module>_main`; it hands over to
/// libFuzzer's driver (libFuzzer's own `main` is then not linked).
@_cdecl("fuzz_vhdx_main")
public func fuzzMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    FuzzerDriver.run(argc: argc, argv: argv, callback: fuzzOneInput)
}
