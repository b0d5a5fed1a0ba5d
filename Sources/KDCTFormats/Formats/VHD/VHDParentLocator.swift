/// Decoding of VHD parent locator data (specification, "Parent Locator Entry"): the platform code says how the
/// bytes at `Platform Data Offset` name the parent.
enum VHDParentLocator {
    /// Largest locator data read (a UTF-16 path of 32767 characters).
    static let maxDataLength: UInt32 = 65536

    /// Priority of a platform code when trying locators: relative Unicode first, then absolute, then Mac, then
    /// the deprecated ASCII forms; unknown codes last.
    static func priority(of code: [UInt8]) -> Int {
        switch String(decoding: code, as: UTF8.self) {
        case "W2ru": return 0
        case "W2ku": return 1
        case "MacX": return 2
        case "Mac ": return 3
        case "Wi2r": return 4
        case "Wi2k": return 5
        default: return 6
        }
    }

    /// The name stored in locator `data` for platform `code`, and whether it is a POSIX path (not Windows);
    /// nil when the platform is unknown or the data holds no name.
    ///
    /// - `W2ru`/`W2ku`: UTF-16LE Windows path (relative / absolute).
    /// - `Wi2r`/`Wi2k`: deprecated single-byte Windows path.
    /// - `MacX`: UTF-8 `file://` URL, converted to its POSIX path.
    /// - `Mac `: a classic Mac OS alias record; the file name (a Pascal string at offset 50 of a version 2
    ///   record) is used as a name to look for beside the child.
    static func decodeName(code: [UInt8], data: [UInt8]) -> (name: String, isPOSIX: Bool)? {
        let reader = ByteReader(data, structure: "VHD parent locator data")
        switch String(decoding: code, as: UTF8.self) {
        case "W2ru", "W2ku":
            guard let text = try? reader.utf16le(0, data.count - data.count % 2), !text.isEmpty else { return nil }
            return (text, false)
        case "Wi2r", "Wi2k":
            guard let text = try? reader.ascii(0, data.count), !text.isEmpty else { return nil }
            return (text, false)
        case "MacX":
            let text = String(decoding: data.prefix { $0 != 0 }, as: UTF8.self)
            if let path = WindowsPath.pathFromFileURL(text) { return (path, true) }
            return text.isEmpty ? nil : (text, true)
        case "Mac ":
            guard let length = try? reader.u8(50), length > 0, length <= 63,
                  let name = try? reader.slice(51, Int(length)) else { return nil }
            let text = String(decoding: name, as: UTF8.self)
            return text.contains("/") ? nil : (text, true)
        default:
            return nil
        }
    }
}
