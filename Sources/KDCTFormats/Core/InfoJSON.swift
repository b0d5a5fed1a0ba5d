/// JSON rendering of `InfoValue` and the qemu-img-compatible description of an image.
extension InfoValue {
    /// The value as JSON text; `indent` > 0 pretty-prints with that many spaces per level (qemu uses 4).
    public func jsonText(indent: Int = 4) -> String {
        var out = ""
        write(to: &out, indent: indent, level: 0)
        return out
    }

    private func write(to out: inout String, indent: Int, level: Int) {
        let newline = indent > 0 ? "\n" : ""
        let pad = { (n: Int) in String(repeating: " ", count: indent * n) }
        switch self {
        case let .string(text): out += Self.quoted(text)
        case let .integer(value): out += String(value)
        case let .unsigned(value): out += String(value)
        case let .bool(value): out += value ? "true" : "false"
        case let .array(items):
            if items.isEmpty { out += "[]"; return }
            out += "[" + newline
            for (i, item) in items.enumerated() {
                out += pad(level + 1)
                item.write(to: &out, indent: indent, level: level + 1)
                out += (i + 1 < items.count ? "," : "") + newline
            }
            out += pad(level) + "]"
        case let .object(pairs):
            if pairs.isEmpty { out += "{}"; return }
            out += "{" + newline
            for (i, (key, value)) in pairs.enumerated() {
                out += pad(level + 1) + Self.quoted(key) + (indent > 0 ? ": " : ":")
                value.write(to: &out, indent: indent, level: level + 1)
                out += (i + 1 < pairs.count ? "," : "") + newline
            }
            out += pad(level) + "}"
        }
    }

    /// `text` as a JSON string literal.
    package static func quoted(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20:
                out += "\\u" + String(scalar.value, radix: 16).leftPadded(to: 4)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}

extension ImageReference {
    /// The reference as a JSON-ready object.
    public var infoValue: InfoValue {
        var pairs: [(String, InfoValue)] = [("kind", .string(kind.rawValue)), ("name", .string(name))]
        if let resolvedPath { pairs.append(("resolved-path", .string(resolvedPath))) }
        pairs.append(("opened", .bool(opened)))
        return .object(pairs)
    }
}

extension ImageInfo {
    /// The description with qemu-img info's JSON keys (`virtual-size`, `filename`, `format`, `actual-size`,
    /// `cluster-size`, `dirty-flag`, `backing-filename`, `format-specific`), plus what KDCT knows beyond qemu
    /// (`subformat`, `producer`, `references`, `notes`, `backing-image`).
    public var infoValue: InfoValue {
        var pairs: [(String, InfoValue)] = [
            ("virtual-size", .unsigned(virtualSize)),
            ("filename", .string(filename)),
            ("format", .string(format == .vhd ? "vpc" : format.rawValue)),
        ]
        if let actualSize { pairs.append(("actual-size", .unsigned(actualSize))) }
        if let clusterSize { pairs.append(("cluster-size", .unsigned(clusterSize))) }
        pairs.append(("dirty-flag", .bool(dirty)))
        if let backingFilename { pairs.append(("backing-filename", .string(backingFilename))) }
        if let backingFormat { pairs.append(("backing-filename-format", .string(backingFormat))) }
        if case let .object(fields) = formatSpecific, !fields.isEmpty {
            pairs.append(("format-specific", .object([("type", .string(format.rawValue)), ("data", formatSpecific)])))
        }
        if let subformat { pairs.append(("subformat", .string(subformat))) }
        if let producer { pairs.append(("producer", .string(producer))) }
        if !references.isEmpty { pairs.append(("references", .array(references.map(\.infoValue)))) }
        if !notes.isEmpty { pairs.append(("notes", .array(notes.map { .string($0) }))) }
        if let below = backingChain.first {
            var lower = below
            lower.backingChain = Array(backingChain.dropFirst())
            pairs.append(("backing-image", lower.infoValue))
        }
        return .object(pairs)
    }
}
