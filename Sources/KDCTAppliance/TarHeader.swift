import KDCTFormats

/// One 512-byte tar header block, decoded: POSIX ustar (POSIX.1-1988, with the 155-byte name prefix), GNU tar
/// (`ustar  ` magic, base-256 numbers) and the old v7 layout.
///
/// Layout (POSIX.1-2001 "ustar Interchange Format"): name[100] @0, mode[8] @100, uid[8] @108, gid[8] @116,
/// size[12] @124, mtime[12] @136, chksum[8] @148, typeflag @156, linkname[100] @157, magic[6] @257,
/// version[2] @263, uname[32] @265, gname[32] @297, devmajor[8] @329, devminor[8] @337, prefix[155] @345.
/// Numbers are octal ASCII; GNU tar stores values that do not fit (sizes of 8 GiB and more) in base-256: the
/// first byte has its top bit set and the rest of the field is a big-endian binary number.
struct TarHeader: Sendable, Equatable {
    /// Size of a tar block and of a header.
    static let blockSize = 512

    /// What a member is, from its `typeflag`.
    enum Kind: Sendable, Equatable {
        /// A regular file (`'0'` or NUL; `'7'`, contiguous file, is read as regular too).
        case regular
        /// A hard link to an earlier member (`'1'`).
        case hardLink
        /// A symbolic link (`'2'`).
        case symbolicLink
        /// A directory (`'5'`).
        case directory
        /// A pax extended header applying to the next member (`'x'`).
        case paxExtended
        /// A pax global extended header (`'g'`).
        case paxGlobal
        /// GNU: the data is the long name of the next member (`'L'`).
        case gnuLongName
        /// GNU: the data is the long link name of the next member (`'K'`).
        case gnuLongLink
        /// GNU old-style sparse file (`'S'`).
        case gnuSparse
        /// Anything else (devices, FIFOs, volume labels...), with its typeflag byte.
        case other(UInt8)

        /// The kind a typeflag byte stands for.
        init(typeflag: UInt8) {
            switch typeflag {
            case 0, UInt8(ascii: "0"), UInt8(ascii: "7"): self = .regular
            case UInt8(ascii: "1"): self = .hardLink
            case UInt8(ascii: "2"): self = .symbolicLink
            case UInt8(ascii: "5"): self = .directory
            case UInt8(ascii: "x"): self = .paxExtended
            case UInt8(ascii: "g"): self = .paxGlobal
            case UInt8(ascii: "L"): self = .gnuLongName
            case UInt8(ascii: "K"): self = .gnuLongLink
            case UInt8(ascii: "S"): self = .gnuSparse
            default: self = .other(typeflag)
            }
        }

        /// True for headers that describe the next member rather than being one.
        var isMetadata: Bool {
            switch self {
            case .paxExtended, .paxGlobal, .gnuLongName, .gnuLongLink: return true
            default: return false
            }
        }
    }

    /// Which header dialect the magic field announces.
    enum Dialect: String, Sendable, Equatable {
        /// POSIX ustar (`ustar\0` `00`).
        case ustar
        /// GNU tar (`ustar ` ` \0`): no name prefix field.
        case gnu
        /// Pre-POSIX v7 tar: no magic.
        case v7
    }

    /// Member name: the name field, preceded by the ustar prefix field and a `/` when that is set.
    var name: String
    /// Link target of hard and symbolic links.
    var linkName: String
    /// Data size in bytes (before any pax or GNU override).
    var size: UInt64
    /// The member's type.
    var kind: Kind
    /// The header dialect.
    var dialect: Dialect

    /// True when the block is all zero bytes (an end-of-archive marker).
    static func isZeroBlock(_ block: [UInt8]) -> Bool {
        block.allSatisfy { $0 == 0 }
    }

    /// Decodes the header `block` found at `offset` in `file` (for messages). Throws `corrupt` when the checksum,
    /// a number field or the size is invalid, and `invalidFormat` when the block is not a tar header at all.
    static func decode(_ block: [UInt8], at offset: UInt64, file: String? = nil) throws -> TarHeader {
        guard block.count == blockSize else {
            throw KDCTError(.truncated, "tar header at offset \(offset) is \(block.count) bytes, not 512",
                            file: file, field: "tar header")
        }
        let where_ = "tar header at archive offset \(offset)"
        // chksum: the sum of all header bytes with the checksum field taken as eight spaces. Old tars summed
        // signed chars; both sums are accepted, as GNU tar does.
        guard let stored = try? number(block, 148, 8, field: "chksum") else {
            throw KDCTError(.invalidFormat, "\(where_) has no valid checksum field: not a tar archive, or corrupt",
                            file: file, field: "chksum")
        }
        var unsignedSum: Int64 = 0
        var signedSum: Int64 = 0
        for (index, byte) in block.enumerated() {
            let value = (148..<156).contains(index) ? UInt8(ascii: " ") : byte
            unsignedSum += Int64(value)
            signedSum += Int64(Int8(bitPattern: value))
        }
        guard stored == UInt64(unsignedSum) || Int64(bitPattern: stored) == signedSum else {
            throw KDCTError(.corrupt, "\(where_): checksum field is \(stored) but the header sums to \(unsignedSum)",
                            file: file, field: "chksum")
        }
        let magic = Array(block[257..<263])
        let dialect: Dialect
        if magic == Array("ustar\0".utf8) {
            dialect = .ustar
        } else if magic == Array("ustar ".utf8) {
            dialect = .gnu
        } else {
            dialect = .v7
        }
        let kind = Kind(typeflag: block[156])
        let size: UInt64
        do {
            size = try number(block, 124, 12, field: "size")
        } catch let error as KDCTError {
            throw KDCTError(.corrupt, "\(where_): \(error.message)", file: file, field: "size")
        }
        var name = string(block, 0, 100)
        if dialect == .ustar {
            let prefix = string(block, 345, 155)
            if !prefix.isEmpty { name = prefix + "/" + name }
        }
        return TarHeader(name: name, linkName: string(block, 157, 100), size: size, kind: kind, dialect: dialect)
    }

    /// A numeric field: octal ASCII (leading spaces or zeros, ended by NUL or space; empty means 0), or GNU
    /// base-256 (top bit of the first byte set; a negative value, first byte 0xFF, is refused).
    static func number(_ block: [UInt8], _ offset: Int, _ count: Int, field: String) throws -> UInt64 {
        guard offset >= 0, count > 0, offset + count <= block.count else {
            throw KDCTError(.truncated, "field \(field) lies outside the header", field: field)
        }
        let bytes = block[offset..<(offset + count)]
        guard let first = bytes.first else { return 0 }
        if first & 0x80 != 0 {
            guard first == 0x80 else {
                throw KDCTError(.corrupt, "\(field) is a negative base-256 number", field: field)
            }
            // 8 bytes of value at most: everything before the last 8 bytes must be zero.
            let digits = bytes.dropFirst()
            let high = digits.dropLast(8)
            guard high.allSatisfy({ $0 == 0 }) else {
                throw KDCTError(.corrupt, "\(field) is a base-256 number above 2^64", field: field)
            }
            return digits.suffix(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        }
        var value: UInt64 = 0
        var index = bytes.startIndex
        while index < bytes.endIndex, bytes[index] == UInt8(ascii: " ") { index += 1 }
        while index < bytes.endIndex {
            let byte = bytes[index]
            if byte == 0 || byte == UInt8(ascii: " ") { break }
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "7") else {
                throw KDCTError(.corrupt, "\(field) holds \(printable(bytes)), not an octal number", field: field)
            }
            let (shifted, overflow) = value.multipliedReportingOverflow(by: 8)
            guard !overflow else { throw KDCTError(.corrupt, "\(field) overflows 64 bits", field: field) }
            value = shifted | UInt64(byte - UInt8(ascii: "0"))
            index += 1
        }
        // After the digits only terminators may follow.
        while index < bytes.endIndex {
            let byte = bytes[index]
            guard byte == 0 || byte == UInt8(ascii: " ") else {
                throw KDCTError(.corrupt, "\(field) holds \(printable(bytes)), not an octal number", field: field)
            }
            index += 1
        }
        return value
    }

    /// A NUL-terminated string field, decoded as UTF-8 (invalid sequences replaced).
    static func string(_ block: [UInt8], _ offset: Int, _ count: Int) -> String {
        let field = block[offset..<min(block.count, offset + count)]
        let end = field.firstIndex(of: 0) ?? field.endIndex
        return String(decoding: field[field.startIndex..<end], as: UTF8.self)
    }

    /// A field's bytes for an error message.
    static func printable(_ bytes: ArraySlice<UInt8>) -> String {
        let text = bytes.map { $0 >= 0x20 && $0 < 0x7F ? String(UnicodeScalar($0)) : "\\x" + hex($0) }.joined()
        return "\"\(text)\""
    }

    private static func hex(_ byte: UInt8) -> String {
        let digits = Array("0123456789abcdef")
        return String(digits[Int(byte >> 4)]) + String(digits[Int(byte & 0xF)])
    }
}

/// The records of a pax extended header (POSIX.1-2001 `pax` format): `"%d %s=%s\n"` where the decimal length
/// counts the whole record, its own digits and the newline included.
enum PaxRecords {
    /// Decodes `data` into key/value pairs in order. Throws `corrupt` on a malformed record.
    static func decode(_ data: [UInt8], file: String? = nil, at offset: UInt64 = 0) throws -> [(String, String)] {
        var records: [(String, String)] = []
        var index = 0
        func fail(_ why: String) -> KDCTError {
            KDCTError(.corrupt, "pax extended header at archive offset \(offset): \(why)", file: file, field: "pax header")
        }
        while index < data.count {
            // Trailing NUL padding after the last record is tolerated.
            if data[index] == 0, data[index...].allSatisfy({ $0 == 0 }) { break }
            var length = 0
            var cursor = index
            while cursor < data.count, data[cursor] >= UInt8(ascii: "0"), data[cursor] <= UInt8(ascii: "9") {
                length = length * 10 + Int(data[cursor] - UInt8(ascii: "0"))
                guard length <= data.count else { throw fail("record length at byte \(index) runs past the header") }
                cursor += 1
            }
            guard cursor > index, cursor < data.count, data[cursor] == UInt8(ascii: " ") else {
                throw fail("record at byte \(index) does not start with a length and a space")
            }
            guard length > cursor - index + 1, length <= data.count - index else {
                throw fail("record at byte \(index) declares length \(length), which does not fit")
            }
            let recordEnd = index + length
            guard data[recordEnd - 1] == UInt8(ascii: "\n") else {
                throw fail("record at byte \(index) does not end with a newline")
            }
            let body = data[(cursor + 1)..<(recordEnd - 1)]
            guard let equals = body.firstIndex(of: UInt8(ascii: "=")), equals > body.startIndex else {
                throw fail("record at byte \(index) has no key=value")
            }
            let key = String(decoding: body[body.startIndex..<equals], as: UTF8.self)
            let value = String(decoding: body[(equals + 1)...], as: UTF8.self)
            records.append((key, value))
            index = recordEnd
        }
        return records
    }

}
