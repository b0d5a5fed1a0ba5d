import ArgumentParser
import KDCTAppliance
import KDCTFormats

/// `info`: what an image is, without opening the files it references.
struct Info: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Describe an image (format, sizes, references, producer).")

    @OptionGroup var source: SourceOptions

    @Option(help: "Output style: human or json (qemu-img's keys).")
    var output: OutputStyle = .human

    @Option(help: "Deployment configuration to describe, for an OVF with several.")
    var config: String?

    @Argument(help: "The image, or an appliance (.ova archive or .ovf descriptor).")
    var image: String

    func run() throws {
        if Appliance.isAppliance(path: image) { return try runAppliance(configuration: config) }
        if config != nil { throw ValidationError("--config applies to OVA/OVF appliances only") }
        let info = try ImageOpener.inspect(image, options: source.openOptions)
        switch output {
        case .json: print(info.infoValue.jsonText())
        case .human: print(HumanInfo.render(info), terminator: "")
        }
    }
}

/// qemu-img-like human rendering of `ImageInfo`.
enum HumanInfo {
    static func render(_ info: ImageInfo) -> String {
        var out = "image: \(info.filename)\n"
        out += "file format: \(info.format == .vhd ? "vpc" : info.format.rawValue)\n"
        if let subformat = info.subformat { out += "subformat: \(subformat)\n" }
        out += "virtual size: \(ByteCount.human(info.virtualSize)) (\(info.virtualSize) bytes)\n"
        if let actual = info.actualSize { out += "disk size: \(ByteCount.human(actual))\n" }
        if let cluster = info.clusterSize { out += "cluster_size: \(cluster)\n" }
        if let backing = info.backingFilename {
            out += "backing file: \(backing)\n"
            if let format = info.backingFormat { out += "backing file format: \(format)\n" }
        }
        if info.dirty { out += "dirty: yes\n" }
        if let producer = info.producer { out += "producer: \(producer)\n" }
        if !info.references.isEmpty {
            out += "references:\n"
            for reference in info.references {
                out += "    \(reference.kind.rawValue): \(reference.name)"
                if let path = reference.resolvedPath { out += " -> \(path)" }
                out += reference.opened ? " (opened)\n" : " (not opened)\n"
            }
        }
        if case let .object(fields) = info.formatSpecific, !fields.isEmpty {
            out += "Format specific information:\n"
            out += renderFields(fields, level: 1)
        }
        for note in info.notes { out += "note: \(note)\n" }
        for (depth, below) in info.backingChain.enumerated() {
            out += "\nbacking image \(depth + 1):\n"
            var lower = below
            lower.backingChain = []
            out += render(lower)
        }
        return out
    }

    private static func renderFields(_ fields: [(String, InfoValue)], level: Int) -> String {
        let pad = String(repeating: "    ", count: level)
        var out = ""
        for (key, value) in fields {
            switch value {
            case let .object(inner):
                out += "\(pad)\(key):\n" + renderFields(inner, level: level + 1)
            case let .array(items):
                out += "\(pad)\(key):\n"
                for (i, item) in items.enumerated() {
                    if case let .object(inner) = item {
                        out += "\(pad)    [\(i)]:\n" + renderFields(inner, level: level + 2)
                    } else {
                        out += "\(pad)    [\(i)]: \(scalar(item))\n"
                    }
                }
            default:
                out += "\(pad)\(key): \(scalar(value))\n"
            }
        }
        return out
    }

    private static func scalar(_ value: InfoValue) -> String {
        switch value {
        case let .string(text): return text
        case let .integer(number): return String(number)
        case let .unsigned(number): return String(number)
        case let .bool(flag): return flag ? "true" : "false"
        default: return value.jsonText(indent: 0)
        }
    }
}

/// Byte counts as qemu prints them (`1 GiB`, `196 KiB`, `1.5 MiB`).
enum ByteCount {
    static func human(_ bytes: UInt64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
        var value = Double(bytes)
        var unit = 0
        while value >= 1024 && unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        if unit == 0 { return "\(bytes) B" }
        let rounded = (value * 100).rounded() / 100
        if rounded == rounded.rounded() { return "\(Int(rounded)) \(units[unit])" }
        var text = String(format2: rounded)
        while text.hasSuffix("0") { text.removeLast() }
        return "\(text) \(units[unit])"
    }
}

extension String {
    /// A number with two decimals, without Foundation.
    init(format2 value: Double) {
        let hundredths = Int((value * 100).rounded())
        let fraction = hundredths % 100
        self = "\(hundredths / 100).\(fraction < 10 ? "0" : "")\(fraction)"
    }
}
