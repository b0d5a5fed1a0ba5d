import ArgumentParser
import KDCTFormats

/// `checksum`: SHA-256 of the whole guest content.
struct Checksum: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "SHA-256 of every guest byte (zero ranges hashed without being read).")

    @OptionGroup var source: SourceOptions

    @Argument(help: "The image.")
    var image: String

    func run() throws {
        let device = try ImageOpener.open(image, options: source.openOptions)
        print("\(try GuestDigest.sha256(of: device))  \(image)")
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
