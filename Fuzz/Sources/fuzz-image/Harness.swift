#if canImport(Glibc)
import Glibc
#endif
import FuzzSupport
import KDCTFormats

/// One harness binary for every reader; which one it fuzzes comes from the name it runs under
/// (`fuzz-qcow2`, `fuzz-vhdx`, `fuzz-ova`...: run-fuzzers.sh runs a copy per name), so libFuzzer's fork-mode jobs,
/// which re-run argv[0], fuzz the same reader.
enum Harness: String, CaseIterable {
    case raw, qcow2, qcow, qed, vdi, vmdk, vhd, vhdx, ova

    /// The harness named by the program name `fuzz-NAME`, if any.
    init?(programPath: String) {
        let name = programPath.split(separator: "/").last.map(String.init) ?? programPath
        guard name.hasPrefix("fuzz-") else { return nil }
        self.init(rawValue: String(name.dropFirst("fuzz-".count)))
    }

    /// Runs one input: image readers open the bytes as their format; the vhdx input describes a sparse file (a VHDX
    /// is at least 4 MiB of 1 MiB-aligned regions, too large to fuzz byte for byte); ova parses an appliance.
    func run(data: UnsafePointer<UInt8>?, size: Int) -> Int32 {
        switch self {
        case .raw: ImageFuzzer.run(format: .raw, data: data, size: size)
        case .qcow2: ImageFuzzer.run(format: .qcow2, data: data, size: size)
        case .qcow: ImageFuzzer.run(format: .qcow, data: data, size: size)
        case .qed: ImageFuzzer.run(format: .qed, data: data, size: size)
        case .vdi: ImageFuzzer.run(format: .vdi, data: data, size: size)
        case .vmdk: ImageFuzzer.run(format: .vmdk, data: data, size: size)
        case .vhd: ImageFuzzer.run(format: .vhd, data: data, size: size)
        case .vhdx: ImageFuzzer.run(format: .vhdx, data: data, size: size, sparse: true)
        case .ova: ApplianceFuzzer.run(data: data, size: size)
        }
    }
}

/// The harness this process runs, set before libFuzzer starts.
nonisolated(unsafe) private var selected = Harness.raw

/// libFuzzer's per-input callback.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    selected.run(data: data, size: size)
}

/// The process entry point. SwiftPM links an executable's `main` to `<module>_main`; it picks the harness from the
/// program name and hands over to libFuzzer's driver (libFuzzer's own `main` is then not linked).
@_cdecl("fuzz_image_main")
public func fuzzMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    let program = argv?[0].map { String(cString: $0) } ?? ""
    guard let harness = Harness(programPath: program) else {
        let names = Harness.allCases.map { "fuzz-\($0.rawValue)" }.joined(separator: ", ")
        let message = Array("run this binary under one of the names \(names) (run-fuzzers.sh does)\n".utf8)
        _ = message.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
        return 2
    }
    selected = harness
    return FuzzerDriver.run(argc: argc, argv: argv, callback: fuzzOneInput)
}
