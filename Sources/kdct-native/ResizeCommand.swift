import ArgumentParser
import KDCTFormats

/// `resize`: a raw or qcow2 image's virtual size changed in place, crash-safe, as qemu-img resize.
struct Resize: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Change the virtual size of a raw or qcow2 image in place (SIZE, +SIZE or -SIZE), as qemu-img resize.",
        discussion: """
            A smaller size needs --shrink (the data past the new end is dropped). A qcow2 image's new metadata is
            written and flushed before its header switches to it, so an interruption leaves the old or the new image
            (at worst with leaked clusters, which check -r leaks reclaims). An image a running VM holds is refused.
            """)

    @Option(name: .customShort("f"), help: "The image's format (raw or qcow2); probed when omitted, and the content must agree.")
    var format: String?

    @Flag(help: "Allow a smaller size: data past the new end is deleted.")
    var shrink = false

    @Option(help: "How the new range is allocated: off, metadata (qcow2), falloc or full.")
    var preallocation: MeasureOptions.Preallocation = .off

    @Option(help: "Which backing file names may be opened (to check their size): same-dir (default), any, none.")
    var references: ReferencePolicy = .sameDirectory

    @Flag(name: .customShort("q"), help: "Quiet: do not print 'Image resized.'")
    var quiet = false

    @Argument(help: "The image.")
    var image: String

    @Argument(help: ArgumentHelp("The new size, or +SIZE / -SIZE to grow or shrink by that much (k, M, G, T suffixes).", valueName: "size"))
    var size: String

    func validate() throws {
        _ = try change()
        if let format, ImageFormat(name: format) == nil {
            throw ValidationError("unknown format '\(format)'; see 'kdct-native formats'")
        }
    }

    /// The size argument as a change.
    func change() throws -> SizeChange {
        var text = size
        let sign = text.first.flatMap { "+-".contains($0) ? $0 : nil }
        if sign != nil { text.removeFirst() }
        guard let bytes = SizeArgument.parse(text) else {
            throw ValidationError("invalid image size '\(size)'; use k, M, G, T, P or E suffixes")
        }
        switch sign {
        case "+": return .grow(by: bytes)
        case "-": return .shrink(by: bytes)
        default: return .to(bytes)
        }
    }

    func run() throws {
        var options = ResizeOptions()
        options.format = format.flatMap { ImageFormat(name: $0) }
        options.shrink = shrink
        options.preallocation = preallocation
        options.openOptions.referencePolicy = references
        try ImageResizer.resize(image, by: change(), options: options)
        if !quiet { print("Image resized.") }
    }

    /// The command line with `--` put before a negative size (`resize IMAGE -1G`), which qemu-img accepts as the
    /// last argument but which would otherwise read as an option.
    static func separatingNegativeSize(_ arguments: [String]) -> [String] {
        guard arguments.first == "resize", let last = arguments.last, arguments.count > 2, !arguments.contains("--"),
              last.count > 1, last.hasPrefix("-"), last.dropFirst().first?.isNumber == true else {
            return arguments
        }
        return arguments.dropLast() + ["--", last]
    }
}

extension MeasureOptions.Preallocation: ExpressibleByArgument {}
