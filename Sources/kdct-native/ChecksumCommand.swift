import ArgumentParser
import KDCTFormats

/// `checksum`: SHA-256 of the whole guest content.
struct Checksum: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "SHA-256 of every guest byte (zero ranges hashed without being read).")

    @OptionGroup var source: SourceOptions

    @OptionGroup var readAhead: ReadAheadOption

    @Argument(help: "The image.")
    var image: String

    func run() throws {
        let device = try ImageOpener.open(image, options: source.openOptions)
        print("\(try GuestDigest.sha256(of: device, readAhead: readAhead.depth, progress: nil))  \(image)")
    }
}

/// `--read-ahead N`, for the commands that read a disk from start to end (convert, checksum, export).
struct ReadAheadOption: ParsableArguments {
    @Option(name: .customLong("read-ahead"), help: ArgumentHelp("Pieces of 4 MiB requested from the disk ahead of the reads, whatever the number of threads reading (default \(PipelineOptions.defaultReadAhead); 0 turns read-ahead off; at most \(PipelineOptions.maxReadAhead)).", valueName: "n"))
    var depth: Int = PipelineOptions.defaultReadAhead

    func validate() throws {
        guard (0...PipelineOptions.maxReadAhead).contains(depth) else {
            throw ValidationError("--read-ahead must be between 0 (off) and \(PipelineOptions.maxReadAhead), not \(depth)")
        }
    }
}

/// `formats`: what can be read and written.
struct Formats: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the supported formats.")

    func run() throws {
        for format in ImageFormat.allCases {
            let read = ImageOpener.canRead(format) ? "read" : "recognised only"
            let write = format.isWritable ? ", write" : ""
            print("\(format.rawValue.padding(6)) \(read)\(write)")
        }
    }
}

extension String {
    func padding(_ width: Int) -> String { count >= width ? self : self + String(repeating: " ", count: width - count) }
}
