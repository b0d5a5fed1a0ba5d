import ArgumentParser
import KDCTFormats

/// How the input image is opened: declared format, trust, references, parents, VHD size convention.
struct SourceOptions: ParsableArguments {
    @Option(name: .customShort("f"), help: "Input format (raw, qcow2, qcow, qed, vdi, vmdk, vhd/vpc, vhdx); probed when omitted.")
    var format: String?

    @Flag(help: "Strict mode for untrusted images: open no referenced file, refuse ambiguous files and risky subformats.")
    var untrusted = false

    @Option(help: "Which referenced files (backing files, extents, parents) may be opened: same-dir (default), any, none.")
    var references: ReferencePolicy = .sameDirectory

    @Option(name: .customLong("parent"), help: "A parent image to use for a differencing disk (repeatable).")
    var parents: [String] = []

    @Option(name: .customLong("vhd-size"), help: "VHD virtual size from the footer's current size or from CHS geometry (current, chs).")
    var vhdSize: VHDSizeMode?

    func validate() throws {
        if let format, ImageFormat(name: format) == nil {
            throw ValidationError("unknown format '\(format)'; see 'kdct-native formats'")
        }
    }

    /// The library's open options.
    var openOptions: OpenOptions {
        var options = OpenOptions(format: format.flatMap { ImageFormat(name: $0) })
        options.untrusted = untrusted
        options.referencePolicy = references
        options.parentFiles = parents
        options.vhdSizeMode = vhdSize
        return options
    }
}

/// `--output human|json`.
enum OutputStyle: String, ExpressibleByArgument, CaseIterable {
    case human, json
}

/// `--progress json`.
enum ProgressStyle: String, ExpressibleByArgument, CaseIterable {
    case json
}

extension ReferencePolicy: ExpressibleByArgument {}
extension VHDSizeMode: ExpressibleByArgument {}
extension CompressionType: ExpressibleByArgument {}
extension RawPreallocation: ExpressibleByArgument {}

/// qemu-img's `-o key=value,...` lists, repeatable, as (key, value) pairs in order.
enum OptionList {
    static func pairs(_ lists: [String]) throws -> [(key: String, value: String)] {
        try lists.flatMap { $0.split(separator: ",") }.map { item in
            let parts = item.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2 else { throw ValidationError("-o expects key=value, got '\(item)'") }
            return (parts[0], parts[1])
        }
    }

    /// qemu's spellings of a boolean option.
    static func onOff(_ text: String) -> Bool? {
        switch text {
        case "on", "true", "yes": return true
        case "off", "false", "no": return false
        default: return nil
        }
    }

    /// A `preallocation=` value.
    static func preallocation(_ text: String) throws -> MeasureOptions.Preallocation {
        guard let mode = MeasureOptions.Preallocation(rawValue: text) else {
            throw ValidationError("preallocation must be off, metadata, falloc or full")
        }
        return mode
    }

    /// A `cluster_size=` value in bytes.
    static func clusterSize(_ text: String) throws -> Int {
        guard let size = SizeArgument.parse(text), size <= 1 << 30 else {
            throw ValidationError("cluster_size: '\(text)' is not a size")
        }
        return Int(size)
    }
}
