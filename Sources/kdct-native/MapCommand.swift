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
        let filename = device.info.filename
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
                guard extent.status == .data else { return }
                let mapped = extent.hostOffset.map { "0x" + String($0, radix: 16) } ?? (extent.compressed ? "compressed" : "-")
                print(pad("0x" + String(extent.offset, radix: 16)) + pad("0x" + String(extent.length, radix: 16))
                      + pad(mapped) + filename)
            }
        }
        if output == .json { print("]") }
    }

    private func pad(_ text: String) -> String {
        text.count >= 16 ? text + " " : text + String(repeating: " ", count: 16 - text.count)
    }
}
