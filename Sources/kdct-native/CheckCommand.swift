import ArgumentParser
import KDCTFormats

/// `check`: structural consistency of a QCOW2 image (refcounts, leaks, overlaps). Exit status as qemu-img:
/// 0 clean, 2 corruptions, 3 leaks only, 1 the check itself failed.
struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check a QCOW2 image's metadata: refcounts, leaked clusters, overlaps, table bounds (exit 0 clean, 2 corrupt, 3 leaks).")

    @OptionGroup var source: SourceOptions

    @Option(help: "Output style: human or json.")
    var output: OutputStyle = .human

    @Argument(help: "The image.")
    var image: String

    func run() throws {
        let format = try ImageOpener.detectFormat(ReadOnlyFile(path: image), options: source.openOptions)
        guard format == .qcow2 else {
            throw KDCTError(.unsupported, "check verifies QCOW2 metadata; this image is \(format)", file: image)
        }
        let report = try QCOW2Checker.check(path: image, limits: source.openOptions.limits)
        let percent = { (part: UInt64, whole: UInt64) in whole == 0 ? "0.00" : String(format2: Double(part) * 100 / Double(whole)) }
        switch output {
        case .json:
            let value: InfoValue = .object([
                ("filename", .string(image)), ("format", .string("qcow2")),
                ("check-errors", .unsigned(UInt64(report.corruptions.count))),
                ("corruptions", .unsigned(UInt64(report.corruptions.count))),
                ("leaks", .unsigned(UInt64(report.leakedClusters.count))),
                ("allocated-clusters", .unsigned(report.allocatedClusters)),
                ("total-clusters", .unsigned(report.totalGuestClusters)),
                ("compressed-clusters", .unsigned(report.compressedClusters)),
                ("fragmented-clusters", .unsigned(report.fragmentedClusters)),
                ("image-end-offset", .unsigned(report.imageEndOffset)),
                ("messages", .array(report.corruptions.map { .string($0) })),
            ])
            print(value.jsonText())
        case .human:
            for message in report.corruptions { print("ERROR \(message)") }
            for cluster in report.leakedClusters.prefix(1000) { print("Leaked cluster \(cluster)") }
            for note in report.notes { print("Note: \(note)") }
            if report.isClean {
                print("No errors were found on the image.")
            } else {
                if !report.corruptions.isEmpty { print("\n\(report.corruptions.count) errors were found on the image.") }
                if !report.leakedClusters.isEmpty {
                    print("\n\(report.leakedClusters.count) leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data.")
                }
            }
            print("\(report.allocatedClusters)/\(report.totalGuestClusters) = \(percent(report.allocatedClusters, report.totalGuestClusters))% allocated, \(percent(report.fragmentedClusters, report.allocatedClusters))% fragmented, \(percent(report.compressedClusters, report.allocatedClusters))% compressed clusters")
            print("Image end offset: \(report.imageEndOffset)")
        }
        if !report.corruptions.isEmpty { throw CommandExit(code: 2) }
        if !report.leakedClusters.isEmpty { throw CommandExit(code: 3) }
    }
}
