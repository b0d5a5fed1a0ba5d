import ArgumentParser
import KDCTFormats

/// `create`: a new, empty raw or qcow2 image (or a qcow2 overlay of a backing file), laid out as qemu-img create
/// lays it out.
struct Create: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create an empty raw or qcow2 image, or a qcow2 overlay of a backing file (-b, -F), as qemu-img create.",
        discussion: """
            The image is written under a temporary name and renamed into place when complete; an existing file is
            replaced only with --force. A block device is written in place (no preallocation). SIZE takes k, M, G,
            T suffixes and may be omitted with -b (the backing file's size). The backing file name is stored as
            given and opened, relative to the new image's folder, under --references (default same-dir).
            """)

    @Option(name: .customShort("f"), help: "Format of the new image: raw (default) or qcow2.")
    var format: String = "raw"

    @Option(name: .customShort("o"), help: "Options, comma separated: cluster_size=N, preallocation=off|metadata|falloc|full, compression_type=zlib|zstd, extended_l2=on|off, backing_file=, backing_fmt=, size=.")
    var options: [String] = []

    @Option(name: .customShort("b"), help: "Backing file of a qcow2 overlay (stored as given: relative to the new image's folder, or absolute).")
    var backingFile: String?

    @Option(name: .customShort("F"), help: "Format of the backing file (required with -b, as qemu-img requires it).")
    var backingFormat: String?

    @Option(help: "Which backing file names may be opened: same-dir (default), any, none.")
    var references: ReferencePolicy = .sameDirectory

    @Flag(name: .customShort("q"), help: "Quiet: do not print the Formatting line.")
    var quiet = false

    @Flag(help: "Replace an existing file (a block device never needs it).")
    var force = false

    @Argument(help: "The new image file (or a block device).")
    var file: String

    @Argument(help: ArgumentHelp("The virtual size (k, M, G, T suffixes); the backing file's when omitted with -b.", valueName: "size"))
    var size: String?

    func validate() throws { _ = try createOptions() }

    /// The library's options and the size asked for, from the flags and `-o`.
    func createOptions() throws -> (options: CreateOptions, size: UInt64?) {
        guard let imageFormat = ImageFormat(name: format), imageFormat.isWritable else {
            throw ValidationError("images are created as raw or qcow2, not '\(format)'")
        }
        var options = CreateOptions(format: imageFormat)
        var size = try size.map(Self.parseSize)
        var backing = backingFile
        var backingFormatName = backingFormat
        for (key, value) in try OptionList.pairs(self.options) {
            switch (imageFormat, key) {
            case (.qcow2, "cluster_size"):
                options.clusterSize = try OptionList.clusterSize(value)
            case (_, "preallocation"):
                options.preallocation = try OptionList.preallocation(value)
            case (.qcow2, "compression_type"):
                guard let type = CompressionType(rawValue: value == "zlib" ? "deflate" : value) else {
                    throw ValidationError("compression_type must be zlib or zstd")
                }
                options.compressionType = type
            case (.qcow2, "extended_l2"):
                guard let flag = OptionList.onOff(value) else { throw ValidationError("extended_l2 must be on or off") }
                options.extendedL2 = flag
            case (_, "backing_file"):
                backing = value
            case (_, "backing_fmt"):
                backingFormatName = value
            case (_, "size"):
                size = try Self.parseSize(value)
            default:
                throw ValidationError("unknown -o option '\(key)' for \(imageFormat)")
            }
        }
        options.backingFile = backing
        if let backingFormatName {
            guard let parsed = ImageFormat(name: backingFormatName) else {
                throw ValidationError("unknown backing format '\(backingFormatName)'; see 'kdct-native formats'")
            }
            options.backingFormat = parsed
        }
        options.backingOpenOptions.referencePolicy = references
        options.overwrite = force
        return (options, size)
    }

    static func parseSize(_ text: String) throws -> UInt64 {
        guard let bytes = SizeArgument.parse(text) else {
            throw ValidationError("invalid image size '\(text)'; use k, M, G, T, P or E suffixes")
        }
        return bytes
    }

    func run() throws {
        let (options, size) = try createOptions()
        let created = try ImageCreator.create(file, size: size, options: options)
        guard !quiet else { return }
        var line = "Formatting '\(file)', fmt=\(options.format)"
        if options.format == .qcow2 {
            line += " cluster_size=\(options.clusterSize) extended_l2=\(options.extendedL2 ? "on" : "off")"
            if options.preallocation != .off { line += " preallocation=\(options.preallocation)" }
            line += " compression_type=\(options.compressionType == .zstd ? "zstd" : "zlib")"
        }
        line += " size=\(size ?? created.virtualSize)"
        if let backing = options.backingFile { line += " backing_file=\(backing)" }
        if let backingFormat = options.backingFormat { line += " backing_fmt=\(backingFormat.qemuName)" }
        if options.format == .raw, options.preallocation != .off { line += " preallocation=\(options.preallocation)" }
        if options.format == .qcow2 { line += " lazy_refcounts=off refcount_bits=16" }
        print(line)
        if !created.layoutMatchesQemu {
            Console.error("note: the metadata needs more refcount blocks than one refcount table cluster names; they are placed after the table, where qemu-img would move the table instead\n")
        }
    }
}
