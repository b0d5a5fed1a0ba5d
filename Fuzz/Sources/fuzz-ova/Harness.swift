import FuzzSupport

/// libFuzzer's per-input callback: the input bytes as an OVA/OVF appliance (see FuzzSupport.ApplianceFuzzer).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    ApplianceFuzzer.run(data: data, size: size)
}

/// The process entry point: hands over to libFuzzer's driver (see the image harnesses).
@_cdecl("fuzz_ova_main")
public func fuzzMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    FuzzerDriver.run(argc: argc, argv: argv, callback: fuzzOneInput)
}
