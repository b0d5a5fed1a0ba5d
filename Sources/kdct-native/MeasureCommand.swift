import ArgumentParser
import KDCTFormats

/// `measure`: the space a raw or qcow2 image needs, with qemu-img measure's values, keys and rules.
struct Measure: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "How much space a raw or qcow2 image of IMAGE's content, or of --size bytes, needs (qemu-img measure's values).",
        discussion: """
            required: the bytes the output needs for the data and all metadata (for qcow2, an upper bound of a
            compressed output too); fully allocated: with every cluster allocated; bitmaps: the persistent bitmaps
            of a qcow2 source (shown when source and output are qcow2 version 3).
            """)

    @OptionGroup var source: SourceOptions

    @Option(name: .customShort("O"), help: "Output format: raw (default) or qcow2.")
    var outputFormat: String = "raw"

    @Option(name: .customShort("o"), help: "Output options, comma separated: cluster_size=N, preallocation=off|metadata|falloc|full, refcount_bits=N, extended_l2=on|off, compat=1.1|0.10, compression_type=zlib|zstd.")
    var outputOptions: [String] = []

    @Option(help: "Output style: human or json (qemu-img's keys).")
    var output: OutputStyle = .human

    @Option(help: ArgumentHelp("Measure a new, empty image of this many bytes (k, M, G, T suffixes) instead of an image.", valueName: "size"))
    var size: String?

    @Flag(name: [.customShort("U"), .customLong("force-share")], help: "Accepted for qemu-img compatibility: inputs are always opened read-only and unlocked.")
    var forceShare = false

    @Argument(help: "The image whose content is measured.")
    var image: String?

    func validate() throws {
        if image == nil && source.format != nil { throw ValidationError("-f requires a filename argument") }
        if image != nil && size != nil { throw ValidationError("--size N cannot be used together with a filename") }
        if image == nil && size == nil { throw ValidationError("either --size N or one filename must be specified") }
        if let size, SizeArgument.parse(size) == nil { throw ValidationError("--size: '\(size)' is not a size") }
        try measureOptions().validate()
    }

    /// `-O` and `-o` as the library's options.
    func measureOptions() throws -> MeasureOptions {
        guard let format = ImageFormat(name: outputFormat), format.isWritable else {
            throw ValidationError("output format must be raw or qcow2, not '\(outputFormat)'")
        }
        var options = MeasureOptions(format: format)
        for item in outputOptions.flatMap({ $0.split(separator: ",") }) {
            let parts = item.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2 else { throw ValidationError("-o expects key=value, got '\(item)'") }
            let value = parts[1]
            switch (format, parts[0]) {
            case (.qcow2, "cluster_size"):
                guard let bytes = SizeArgument.parse(value), bytes <= 1 << 30 else {
                    throw ValidationError("cluster_size: '\(value)' is not a size")
                }
                options.clusterSize = Int(bytes)
            case (_, "preallocation"):
                guard let mode = MeasureOptions.Preallocation(rawValue: value) else {
                    throw ValidationError("preallocation must be off, metadata, falloc or full")
                }
                if format == .raw && mode == .metadata { throw ValidationError("raw has no metadata to preallocate") }
                options.preallocation = mode
            case (.qcow2, "refcount_bits"):
                guard let bits = Int(value) else { throw ValidationError("refcount_bits: '\(value)' is not a number") }
                options.refcountBits = bits
            case (.qcow2, "extended_l2"):
                guard let flag = Self.onOff(value) else { throw ValidationError("extended_l2 must be on or off") }
                options.extendedL2 = flag
            case (.qcow2, "compat"):
                switch value {
                case "1.1", "v3": options.version3 = true
                case "0.10", "v2": options.version3 = false
                default: throw ValidationError("compat must be 1.1 or 0.10")
                }
            case (.qcow2, "compression_type"):
                guard ["zlib", "deflate", "zstd"].contains(value) else {
                    throw ValidationError("compression_type must be zlib or zstd")
                }
            default:
                throw ValidationError("unknown -o option '\(parts[0])' for \(format)")
            }
        }
        return options
    }

    private static func onOff(_ text: String) -> Bool? {
        switch text {
        case "on", "true", "yes": return true
        case "off", "false", "no": return false
        default: return nil
        }
    }

    func run() throws {
        let options = try measureOptions()
        let measurement: SpaceMeasurement
        if let image {
            measurement = try SpaceEstimate.measure(ImageOpener.open(image, options: source.openOptions), options: options)
        } else {
            measurement = try SpaceEstimate.measure(size: SizeArgument.parse(size ?? "") ?? 0, options: options)
        }
        switch output {
        case .human:
            print("required size: \(measurement.required)")
            print("fully allocated size: \(measurement.fullyAllocated)")
            if let bitmaps = measurement.bitmaps { print("bitmaps size: \(bitmaps)") }
        case .json:
            var fields: [(String, InfoValue)] = []
            if let bitmaps = measurement.bitmaps { fields.append(("bitmaps", .unsigned(bitmaps))) }
            fields.append(("required", .unsigned(measurement.required)))
            fields.append(("fully-allocated", .unsigned(measurement.fullyAllocated)))
            print(InfoValue.object(fields).jsonText())
        }
    }
}
