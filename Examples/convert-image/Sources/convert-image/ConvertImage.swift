#if canImport(Glibc)
import Glibc
#endif
import KDCTFormats

/// `convert-image IMAGE OUTPUT.qcow2`: describes IMAGE, lists its extents, and converts it to QCOW2 with the async
/// API, showing progress. Exit status 0 on success, 1 with one line on stderr on failure, 2 on bad usage.
@main
struct ConvertImage {
    static func main() async {
        let arguments = CommandLine.arguments
        guard arguments.count == 3 else {
            printError("usage: convert-image IMAGE OUTPUT.qcow2")
            exit(2)
        }
        do {
            try await run(image: arguments[1], output: arguments[2])
        } catch let error as KDCTError {
            printError("convert-image: \(error) [\(error.code)]")
            exit(1)
        } catch {
            printError("convert-image: \(error)")
            exit(1)
        }
    }

    static func run(image: String, output: String) async throws {
        // Open: the format comes from the content; a chain comes back as one device.
        let disk = try ImageOpener.open(image)
        let info = disk.info
        print("\(info.filename): \(info.format)\(info.subformat.map { " (\($0))" } ?? ""), \(disk.virtualSize) bytes")
        for reference in info.references { print("  \(reference.kind.rawValue): \(reference.name)") }

        // Walk the extents: metadata only, no guest data is read.
        var stored: UInt64 = 0
        var count = 0
        try disk.forEachExtent(to: disk.virtualSize) { extent in
            count += 1
            if extent.status == .data { stored += extent.length }
            print("  [\(extent.offset), +\(extent.length)) \(extent.status.rawValue)")
        }
        print("\(count) extents, \(stored) bytes stored")

        // Convert with the async API; progress arrives on a stream that ends with the conversion.
        let (progress, reporter) = AsyncStream.makeStream(of: ConvertProgress.self, bufferingPolicy: .bufferingNewest(1))
        async let converted = DiskConverter.convert(disk, toFile: output, options: ConvertOptions(outputFormat: .qcow2),
                                                    progress: reporter)
        var shown = -1
        for await step in progress {
            let percent = Int(step.fraction * 100)
            if percent / 25 > shown / 25 { print("converting: \(percent)%") }
            shown = percent
        }
        let result = try await converted
        print("wrote \(output): \(result.dataClusters) data clusters, \(result.zeroClusters) zero clusters, "
              + "\(result.dataBytesRead) bytes read")
    }

    /// Writes one line to stderr (the C `stderr` global is not concurrency-safe in Swift 6).
    static func printError(_ line: String) {
        let bytes = Array((line + "\n").utf8)
        _ = bytes.withUnsafeBytes { write(STDERR_FILENO, $0.baseAddress, $0.count) }
    }
}
