import ArgumentParser
import KDCTFormats

/// `check`: structural consistency of a QCOW2 image (refcounts, leaks, overlaps).
struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check a QCOW2 image's metadata: refcounts, leaked clusters, overlaps, table bounds.")

    @OptionGroup var source: SourceOptions

    @Argument(help: "The image.")
    var image: String

    func run() throws {
        throw KDCTError(.unsupported, "check is not implemented yet", file: image)
    }
}
