import ArgumentParser
import KDCTAppliance
import KDCTExport
import KDCTFormats
#if canImport(Glibc)
import Glibc
#endif

/// `convert`: any supported image to RAW or QCOW2, onto a new file, a block device or an existing image.
struct Convert: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Convert an image to raw or qcow2 (flattening any backing/parent chain) onto a file, a block device or an existing image, or an OVA/OVF appliance to disks and a libvirt domain.",
        discussion: """
            Exit status: 0 done, 1 error (nothing under the destination name), 130 after SIGINT, 143 after SIGTERM.
            A block device (or a symlink to one) is written in place: no --force needed, never replaced.
            """)

    @OptionGroup var source: SourceOptions

    @OptionGroup var appliance: ApplianceOptionGroup

    @Option(name: .customShort("O"), help: "Output format: raw or qcow2 (default: qcow2 for a name ending in .qcow2, the existing image's format with -n, else raw).")
    var outputFormat: String?

    @Flag(name: .customShort("c"), help: "Compress every cluster (qcow2 only).")
    var compress = false

    @Option(name: .customShort("o"), help: "Output options, comma separated: cluster_size=N, compression_type=deflate|zstd, preallocation=off|falloc|full, vhd_size=current|chs.")
    var outputOptions: [String] = []

    @Flag(name: .customShort("n"), help: "Do not create the destination: write into the existing raw file or device, or the existing qcow2 image (its virtual size at least the source's).")
    var useExisting = false

    @Flag(name: .customLong("target-is-zero"), help: "With -n: the destination already reads as zeros, so ranges without data are not zeroed.")
    var targetIsZero = false

    @Option(name: .customShort("S"), help: ArgumentHelp("Shortest run of zeros left unallocated (a multiple of 512 up to 16M; default 4k; 0 writes every byte).", valueName: "size"))
    var sparseSize: String?

    @Flag(name: .customShort("C"), help: "Copy offloading: data stored uncompressed is copied by the kernel (copy_file_range, a reflink where the file system can), without zero detection.")
    var copyOffload = false

    @Option(name: .customShort("t"), help: ArgumentHelp("Destination cache mode (none, writeback, writethrough, directsync, unsafe): unsafe skips the final flush; every other mode flushes.", valueName: "cache"))
    var cache: CacheMode?

    @Option(name: .customShort("T"), help: ArgumentHelp("Source cache mode (accepted for qemu-img compatibility: sources are read through the page cache).", valueName: "cache"))
    var sourceCache: CacheMode?

    @Flag(name: [.customShort("U"), .customLong("force-share")], help: "Accepted for qemu-img compatibility: inputs are always opened read-only and unlocked.")
    var forceShare = false

    @Flag(name: .customShort("W"), help: "Accepted for qemu-img compatibility: the output order is fixed anyway.")
    var outOfOrder = false

    @Option(name: .customShort("m"), help: "Worker threads (default: the number of CPUs).")
    var workers: Int?

    @OptionGroup var readAhead: ReadAheadOption

    @Flag(name: .customShort("p"), help: "Show a progress bar on a terminal.")
    var progressBar = false

    @Flag(name: .customShort("q"), help: "Quiet: no progress bar and no notes, only errors.")
    var quiet = false

    @Option(name: .customLong("progress"), help: "Progress for scripts: json (one object per line on stdout, then a done or failed object).")
    var progressStyle: ProgressStyle?

    @Option(name: .customShort("B"), help: ArgumentHelp("Write a qcow2 overlay of this backing file (stored as given, relative to the destination's folder): only what it does not hold, for incremental migration. Needs -F.", valueName: "backing"))
    var backingFile: String?

    @Option(name: .customShort("F"), help: ArgumentHelp("Format of the -B backing file (checked against its content).", valueName: "fmt"))
    var backingFormat: String?

    @Option(name: .customShort("l"), help: ArgumentHelp("Read a qcow2 internal snapshot instead of the active layer: NAME_OR_ID, snapshot.id=ID or snapshot.name=NAME.", valueName: "snapshot"))
    var snapshot: String?

    @Flag(help: "Replace an existing destination file (a block device never needs it).")
    var force = false

    @Flag(name: .customLong("no-space-check"), help: "Do not compare the space the output needs with the free space first.")
    var noSpaceCheck = false

    @Argument(help: "Source image, or an appliance (.ova archive or .ovf descriptor).")
    var sourceImage: String

    @Argument(help: "Destination file or block device (an output directory for an appliance), or sftp://USER@HOST[:PORT]/path to stream the image to a host.")
    var destination: String

    @OptionGroup(title: "Remote destination (sftp://)")
    var ssh: SSHOptions

    /// The format `-O` asked for.
    var requestedFormat: ImageFormat? { outputFormat.flatMap { ImageFormat(name: $0) } }

    func validate() throws {
        if let outputFormat {
            guard let format = ImageFormat(name: outputFormat), format.isWritable else {
                throw ValidationError("output format must be raw or qcow2, not '\(outputFormat)'")
            }
            if compress && format != .qcow2 { throw ValidationError("-c needs -O qcow2") }
        }
        if let workers, workers < 1 || workers > 256 { throw ValidationError("-m must be between 1 and 256") }
        if compress && copyOffload { throw ValidationError("-C cannot be used with -c (compressed data is never copied as is)") }
        if sparseSize != nil && copyOffload { throw ValidationError("-C cannot be used with -S (copied data is not zero-detected)") }
        if targetIsZero && !useExisting { throw ValidationError("--target-is-zero needs -n") }
        if useExisting && !outputOptions.isEmpty { throw ValidationError("-o has no effect with -n (the existing image is kept)") }
        if backingFile != nil {
            if backingFormat == nil { throw ValidationError("use of backing file requires explicit backing format (-F)") }
            if useExisting || copyOffload || sparseSize != nil {
                throw ValidationError("-B writes a new qcow2 overlay: not with -n, -C or -S")
            }
            if let requestedFormat, requestedFormat != .qcow2 { throw ValidationError("-B needs -O qcow2 (a backing file is a qcow2 feature)") }
        } else if backingFormat != nil {
            throw ValidationError("-F names the format of the -B backing file")
        }
        if let backingFormat, ImageFormat(name: backingFormat) == nil {
            throw ValidationError("unknown backing format '\(backingFormat)'; see 'kdct-native formats'")
        }
        if let snapshot {
            do { _ = try SnapshotSelector(qemuSyntax: snapshot) } catch let error as KDCTError { throw ValidationError("-l: \(error.message)") }
        }
        _ = try minimumSparseRun()
        _ = try parsedOutputOptions(format: requestedFormat ?? .raw)
    }

    /// `-S` in bytes (nil: the default).
    func minimumSparseRun() throws -> UInt64? {
        guard let sparseSize else { return nil }
        guard let bytes = SizeArgument.parse(sparseSize), bytes % 512 == 0, bytes <= 16 << 20 else {
            throw ValidationError("-S must be a multiple of 512 up to 16M (0 writes every byte), not '\(sparseSize)'")
        }
        return bytes
    }

    /// `-o` options parsed into the library's option types.
    func parsedOutputOptions(format: ImageFormat) throws -> (convert: ConvertOptions, vhdSize: VHDSizeMode?) {
        var options = ConvertOptions(outputFormat: format)
        options.qcow2.compress = compress
        var vhdSize: VHDSizeMode?
        for (key, value) in try OptionList.pairs(outputOptions) {
            switch key {
            case "cluster_size":
                options.qcow2.clusterSize = try OptionList.clusterSize(value)
            case "compression_type":
                // qemu spells deflate "zlib".
                guard let type = CompressionType(rawValue: value == "zlib" ? "deflate" : value) else {
                    throw ValidationError("compression_type must be deflate or zstd (qemu calls deflate 'zlib')")
                }
                options.qcow2.compressionType = type
            case "preallocation":
                guard let mode = RawPreallocation(rawValue: value) else {
                    throw ValidationError("preallocation must be off, falloc or full")
                }
                options.rawPreallocation = mode
            case "vhd_size":
                guard let mode = VHDSizeMode(rawValue: value) else {
                    throw ValidationError("vhd_size must be current or chs")
                }
                vhdSize = mode
            default:
                throw ValidationError("unknown -o option '\(key)'")
            }
        }
        options.destination.useExisting = useExisting
        options.destination.targetIsZero = targetIsZero
        options.destination.flush = cache != .unsafe
        options.destination.checkSpace = !noSpaceCheck
        options.destination.minimumSparseRun = try minimumSparseRun()
        options.destination.copyOffload = copyOffload
        if let backingFile, let format = backingFormat.flatMap({ ImageFormat(name: $0) }) {
            var overlay = BackingOverlay(backingFile: backingFile, backingFormat: format)
            overlay.openOptions = source.openOptions
            overlay.openOptions.parentFiles = []
            options.backing = overlay
        }
        return (options, vhdSize)
    }

    func run() throws {
        Interruption.install()
        let reporter = ProgressReporter(bar: progressBar && !quiet, json: progressStyle == .json)
        do {
            if let result = try convert(reporter: reporter) { reporter.done(result) }
        } catch let exit as CommandExit {
            throw exit  // already reported (a conversion to a host ends with its own final object)
        } catch {
            reporter.failed(error, exitStatus: exitStatus(for: error))
            throw error
        }
    }

    /// Runs the conversion; returns the keys of the final `done` object, or nil when the conversion already printed
    /// its own (a conversion to a host).
    private func convert(reporter: ProgressReporter) throws -> [(String, JSONLine.Value)]? {
        let remote = RemoteLocation.isURL(destination)
        if Appliance.isAppliance(path: sourceImage) {
            if remote {
                throw ValidationError("an appliance converts to a local directory; send its disks with 'kdct-native export'")
            }
            if useExisting { throw ValidationError("-n writes one image; an appliance converts to a directory") }
            if backingFile != nil || snapshot != nil { throw ValidationError("-B and -l apply to single images, not appliances") }
            var (options, _) = try parsedOutputOptions(format: requestedFormat ?? .raw)
            configure(&options, reporter: reporter)
            return try runAppliance(options: options)
        }
        if appliance.config != nil || appliance.noVerify {
            throw ValidationError("--config and --no-verify apply to OVA/OVF appliances only")
        }
        if remote && backingFile != nil { throw ValidationError("-B writes a local overlay; send it with 'kdct-native export'") }
        if remote && useExisting { throw ValidationError("-n applies to local destinations") }
        let format = try OutputFormatChoice.choose(requested: requestedFormat,
                                                   destination: remote ? FilePaths.lastComponent(of: destination) : destination,
                                                   useExisting: useExisting)
        if compress && format != .qcow2 { throw ValidationError("-c needs a qcow2 output (-O qcow2)") }
        if requestedFormat == nil && format == .qcow2 && !useExisting && !quiet {
            Console.error("note: writing qcow2, as the destination's name says (-O chooses the format)\n")
        }
        var (options, vhdSize) = try parsedOutputOptions(format: format)
        configure(&options, reporter: reporter)
        var openOptions = source.openOptions
        if let vhdSize { openOptions.vhdSizeMode = vhdSize }
        openOptions.snapshot = try snapshot.map { try SnapshotSelector(qemuSyntax: $0) }
        let device = try ImageOpener.open(sourceImage, options: openOptions)
        if remote {
            if appliance.domainXML != nil { throw ValidationError("--domain-xml needs a local destination") }
            // The remote path reports in the export's layout and prints its own final object.
            try RemoteConvert.run(device, source: sourceImage, destination: destination, options: options, ssh: ssh,
                                  bar: progressBar && !quiet, json: progressStyle == .json)
            return nil
        }
        let result = try DiskConverter.convert(device, toFile: destination, options: options)
        try writeSingleDiskDomain(source: device, format: options.outputFormat)
        return [("output", .string(destination)), ("format", .string(format.rawValue)),
                ("virtual-size", .unsigned(device.virtualSize)), ("data-read", .unsigned(result.dataBytesRead))]
    }

    /// Workers, progress and cancellation.
    private func configure(_ options: inout ConvertOptions, reporter: ProgressReporter) {
        options.overwrite = force
        if let workers { options.pipeline.workers = workers }
        options.pipeline.readAhead = readAhead.depth
        options.pipeline.progress = { reporter.report($0) }
        options.pipeline.isCancelled = { Interruption.requested }
    }

}

/// `-t`/`-T` cache modes, as qemu spells them.
enum CacheMode: String, ExpressibleByArgument, CaseIterable {
    case none, writeback, writethrough, directsync, unsafe
}

/// Sizes as qemu-img reads them: a number with an optional fraction and suffix (k, M, G, T, P, E: powers of
/// 1024; b or none: bytes), e.g. `65536`, `64k`, `1.5G`.
enum SizeArgument {
    static func parse(_ text: String) -> UInt64? {
        var number = text
        var multiplier: Double = 1
        let units: [Character: Double] = ["b": 1, "k": 1024, "m": 1024 * 1024, "g": 1024 * 1024 * 1024,
                                          "t": 1024 * 1024 * 1024 * 1024, "p": 1024 * 1024 * 1024 * 1024 * 1024,
                                          "e": 1024 * 1024 * 1024 * 1024 * 1024 * 1024]
        if let last = number.last, let unit = units[Character(last.lowercased())] {
            multiplier = unit
            number.removeLast()
        }
        guard !number.isEmpty, number.allSatisfy({ $0.isASCII && ($0.isNumber || $0 == ".") }),
              number.filter({ $0 == "." }).count <= 1, let value = Double(number) else { return nil }
        let bytes = value * multiplier
        guard bytes.isFinite, bytes < 1.8e19, bytes == bytes.rounded() else { return nil }
        return UInt64(bytes)
    }
}
