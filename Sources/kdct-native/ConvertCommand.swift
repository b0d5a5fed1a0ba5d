import ArgumentParser
import KDCTExport
import KDCTFormats
#if canImport(Glibc)
import Glibc
#endif

/// `convert`: any supported image to RAW or QCOW2.
struct Convert: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Convert an image to raw or qcow2 (flattening any backing/parent chain), or an OVA/OVF appliance to disks and a libvirt domain.")

    @OptionGroup var source: SourceOptions

    @OptionGroup var appliance: ApplianceOptionGroup

    @Option(name: .customShort("O"), help: "Output format: raw (default) or qcow2.")
    var outputFormat: String = "raw"

    @Flag(name: .customShort("c"), help: "Compress every cluster (qcow2 only).")
    var compress = false

    @Option(name: .customShort("o"), help: "Output options, comma separated: cluster_size=N, compression_type=deflate|zstd, preallocation=off|falloc|full, vhd_size=current|chs.")
    var outputOptions: [String] = []

    @Option(name: .customShort("m"), help: "Worker threads (default: the number of CPUs).")
    var workers: Int?

    @Flag(name: .customShort("p"), help: "Show a progress bar on a terminal.")
    var progressBar = false

    @Option(name: .customLong("progress"), help: "Progress for scripts: json (one object per line on stdout).")
    var progressStyle: ProgressStyle?

    @Flag(help: "Replace an existing destination.")
    var force = false

    @Argument(help: "Source image, or an appliance (.ova archive or .ovf descriptor).")
    var sourceImage: String

    @Argument(help: "Destination file (an output directory for an appliance), or sftp://USER@HOST[:PORT]/path to stream the image to a host.")
    var destination: String

    @OptionGroup(title: "Remote destination (sftp://)")
    var ssh: SSHOptions

    func validate() throws {
        guard let format = ImageFormat(name: outputFormat), format.isWritable else {
            throw ValidationError("output format must be raw or qcow2, not '\(outputFormat)'")
        }
        if compress && format != .qcow2 { throw ValidationError("-c needs -O qcow2") }
        if let workers, workers < 1 || workers > 256 { throw ValidationError("-m must be between 1 and 256") }
        _ = try parsedOutputOptions()
    }

    /// `-o` options parsed into the library's option types.
    func parsedOutputOptions() throws -> (convert: ConvertOptions, vhdSize: VHDSizeMode?) {
        var options = ConvertOptions(outputFormat: ImageFormat(name: outputFormat) ?? .raw)
        options.qcow2.compress = compress
        var vhdSize: VHDSizeMode?
        for item in outputOptions.flatMap({ $0.split(separator: ",") }) {
            let parts = item.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2 else { throw ValidationError("-o expects key=value, got '\(item)'") }
            switch parts[0] {
            case "cluster_size":
                guard let size = ByteSizeParser.parse(parts[1]) else {
                    throw ValidationError("cluster_size: '\(parts[1])' is not a size")
                }
                options.qcow2.clusterSize = size
            case "compression_type":
                // qemu spells deflate "zlib".
                guard let type = CompressionType(rawValue: parts[1] == "zlib" ? "deflate" : parts[1]) else {
                    throw ValidationError("compression_type must be deflate or zstd (qemu calls deflate 'zlib')")
                }
                options.qcow2.compressionType = type
            case "preallocation":
                guard let mode = RawPreallocation(rawValue: parts[1]) else {
                    throw ValidationError("preallocation must be off, falloc or full")
                }
                options.rawPreallocation = mode
            case "vhd_size":
                guard let mode = VHDSizeMode(rawValue: parts[1]) else {
                    throw ValidationError("vhd_size must be current or chs")
                }
                vhdSize = mode
            default:
                throw ValidationError("unknown -o option '\(parts[0])'")
            }
        }
        return (options, vhdSize)
    }

    func run() throws {
        var (options, vhdSize) = try parsedOutputOptions()
        options.overwrite = force
        if let workers { options.pipeline.workers = workers }
        let reporter = ProgressReporter(bar: progressBar, json: progressStyle == .json)
        options.pipeline.progress = { reporter.report($0) }
        options.pipeline.isCancelled = { Interruption.requested }
        Interruption.install()
        defer { reporter.finish() }
        if Appliance.isAppliance(path: sourceImage) {
            if RemoteLocation.isURL(destination) {
                throw ValidationError("an appliance converts to a local directory; send its disks with 'kdct-native export'")
            }
            return try runAppliance(options: options)
        }
        if appliance.config != nil || appliance.noVerify {
            throw ValidationError("--config and --no-verify apply to OVA/OVF appliances only")
        }
        var openOptions = source.openOptions
        if let vhdSize { openOptions.vhdSizeMode = vhdSize }
        let device = try ImageOpener.open(sourceImage, options: openOptions)
        if RemoteLocation.isURL(destination) {
            if appliance.domainXML != nil { throw ValidationError("--domain-xml needs a local destination") }
            return try RemoteConvert.run(device, source: sourceImage, destination: destination, options: options, ssh: ssh,
                                         bar: progressBar, json: progressStyle == .json)
        }
        try DiskConverter.convert(device, toFile: destination, options: options)
        try writeSingleDiskDomain(source: device, format: options.outputFormat)
    }
}

/// Sizes like `65536`, `64k`, `2M` (powers of 1024, as qemu).
enum ByteSizeParser {
    static func parse(_ text: String) -> Int? {
        let lower = text.lowercased()
        let multipliers: [Character: Int] = ["k": 1 << 10, "m": 1 << 20, "g": 1 << 30]
        if let last = lower.last, let multiplier = multipliers[last] {
            return Int(lower.dropLast()).map { $0 * multiplier }
        }
        return Int(lower.hasSuffix("b") ? String(lower.dropLast()) : lower)
    }
}

/// SIGINT/SIGTERM set a flag the pipeline polls, so an interrupted conversion removes its temporary file.
enum Interruption {
    nonisolated(unsafe) static var requested = false

    static func install() {
        signal(SIGINT) { _ in Interruption.requested = true }
        signal(SIGTERM) { _ in Interruption.requested = true }
    }
}
