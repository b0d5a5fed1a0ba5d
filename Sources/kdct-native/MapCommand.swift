import ArgumentParser
import KDCTFormats

/// `map`: which guest ranges hold data, zeros, or nothing, and where they live.
struct Map: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show how guest ranges map to the image file.")

    @OptionGroup var source: SourceOptions

    @Option(help: "Output style: human or json (qemu-img map's fields plus 'compressed').")
    var output: OutputStyle = .human

    @Argument(help: "The image.")
    var image: String

    func run() throws {
        let device = try ImageOpener.open(image, options: source.openOptions)
        var first = true
        if output == .json { print("[", terminator: "") }
        if output == .human {
            print("Offset          Length          Mapped to       File")
        }
        try device.forEachExtent(to: device.virtualSize) { extent in
            switch output {
            case .json:
                var pairs: [(String, InfoValue)] = [
                    ("start", .unsigned(extent.offset)), ("length", .unsigned(extent.length)),
                    ("depth", .integer(Int64(extent.depth))),
                    ("present", .bool(extent.status != .absent)),
                    ("zero", .bool(extent.status != .data)),
                    ("data", .bool(extent.status == .data)),
                    ("compressed", .bool(extent.compressed)),
                ]
                if let host = extent.hostOffset { pairs.append(("offset", .unsigned(host))) }
                print((first ? "" : ",\n") + InfoValue.object(pairs).jsonText(indent: 0), terminator: "")
                first = false
            case .human:
                // As qemu-img: data runs only, each with the file (the layer of a chain, the VMDK extent) holding it.
                guard extent.status == .data else { return }
                let mapped = extent.hostOffset.map(hex) ?? (extent.compressed ? "compressed" : "-")
                print(pad(hex(extent.offset)) + pad(hex(extent.length)) + pad(mapped) + (extent.file ?? ""))
            }
        }
        if output == .json { print("]") }
    }

    /// C's `%#x`, as qemu-img prints offsets: `0` for zero, `0x...` otherwise.
    private func hex(_ value: UInt64) -> String { value == 0 ? "0" : "0x" + String(value, radix: 16) }

    private func pad(_ text: String) -> String {
        text.count >= 16 ? text + " " : text + String(repeating: " ", count: 16 - text.count)
    }
}
