import ArgumentParser
import KDCTFormats
#if canImport(Glibc)
import Glibc
#endif

/// `compare`: exit 0 when the guests are identical, 1 when they differ, 2 on error (qemu-img compare's statuses).
struct Compare: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Compare the guest content of two images (exit 0 identical, 1 different, 2 error).")

    @Option(name: .customShort("f"), help: "Format of the first image.")
    var formatA: String?

    @Option(name: .customShort("F"), help: "Format of the second image.")
    var formatB: String?

    @Flag(name: .customShort("s"), help: "Strict: images of different sizes differ, and so do ranges mapped differently (data, zero, unallocated, compressed).")
    var strict = false

    @Flag(name: .customShort("q"), help: "Quiet: print nothing; the exit status says it.")
    var quiet = false

    @Flag(name: [.customShort("U"), .customLong("force-share")], help: "Accepted for qemu-img compatibility: inputs are always opened read-only and unlocked.")
    var forceShare = false

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
            if a.virtualSize != b.virtualSize {
                if strict { try differ("Strict mode: Image size mismatch!") }
                say("Warning: Image size mismatch!")
            }
            let allocation = strict ? try GuestComparison.firstAllocationDifference(a, b) : nil
            let content: UInt64?
            switch try GuestComparison.compare(a, b) {
            case .identical: content = nil
            case let .differ(offset): content = offset
            }
            // The lower offset is what a front-to-back walk meets first (qemu checks the map before the bytes).
            if let allocation, allocation <= content ?? .max {
                try differ("Strict mode: Offset \(allocation) block status mismatch!")
            }
            if let content { try differ("Content mismatch at offset \(content)!") }
            say("Images are identical.")
        } catch let error as KDCTError {
            Console.error("kdct-native: \(error.commandLineDescription)\n")
            throw CommandExit(code: 2)
        }
    }

    private func say(_ line: String) {
        if !quiet { print(line) }
    }

    private func differ(_ line: String) throws -> Never {
        say(line)
        throw CommandExit(code: 1)
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
