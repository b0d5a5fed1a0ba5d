import ArgumentParser
import KDCTFormats
#if canImport(Glibc)
import Glibc
#endif

/// `compare`: exit 0 when the guests are identical, 1 when they differ, 2 on error.
struct Compare: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Compare the guest content of two images (exit 0 identical, 1 different, 2 error).")

    @Option(name: .customShort("f"), help: "Format of the first image.")
    var formatA: String?

    @Option(name: .customShort("F"), help: "Format of the second image.")
    var formatB: String?

    @Flag(help: "Strict mode for untrusted images.")
    var untrusted = false

    @Option(help: "Which referenced files may be opened: same-dir (default), any, none.")
    var references: ReferencePolicy = .sameDirectory

    @Argument(help: "First image.")
    var imageA: String

    @Argument(help: "Second image.")
    var imageB: String

    func run() throws {
        do {
            let a = try ImageOpener.open(imageA, options: options(formatA))
            let b = try ImageOpener.open(imageB, options: options(formatB))
            if a.virtualSize != b.virtualSize { print("Warning: Image size mismatch!") }
            switch try GuestComparison.compare(a, b) {
            case .identical:
                print("Images are identical.")
            case let .differ(offset):
                print("Content mismatch at offset \(offset)!")
                throw CommandExit(code: 1)
            }
        } catch let error as KDCTError {
            Console.error("kdct-native: \(error.commandLineDescription)\n")
            throw CommandExit(code: 2)
        }
    }

    private func options(_ format: String?) throws -> OpenOptions {
        var options = OpenOptions()
        if let format {
            guard let parsed = ImageFormat(name: format) else { throw ValidationError("unknown format '\(format)'") }
            options.format = parsed
        }
        options.untrusted = untrusted
        options.referencePolicy = references
        return options
    }
}
