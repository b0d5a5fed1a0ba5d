/// A VMDK text descriptor ("Virtual Disk Format 1.1", section "The Descriptor File"): either a standalone `.vmdk`
/// text file or the text embedded in a hosted sparse extent.
///
/// ```
/// # Disk DescriptorFile
/// version=1
/// CID=f879aea6
/// parentCID=ffffffff
/// createType="twoGbMaxExtentSparse"
/// RW 4192256 SPARSE "disk-s001.vmdk"
/// RW 20480 VMFS "disk-flat.vmdk" 0
/// ddb.adapterType = "lsilogic"
/// ```
///
/// Parsing is a pure function of the text. Lines are `key = value` pairs (values optionally quoted) or extent
/// lines; `#` starts a comment. Extent lines are parsed strictly (a typo must not silently shrink the disk); other
/// lines that are neither are kept in `ignoredLines` and reported as notes.
struct VMDKDescriptor: Sendable, Equatable {
    /// Who may access an extent (`RW`, `RDONLY`, `NOACCESS`).
    enum Access: String, Sendable, Equatable {
        /// `RW`: read-write.
        case readWrite = "RW"
        /// `RDONLY`: read-only (streamOptimized exports use it); read like `RW`.
        case readOnly = "RDONLY"
        /// `NOACCESS`: the guest may not read it; reads as zeros.
        case noAccess = "NOACCESS"
    }

    /// The storage type of an extent.
    enum ExtentType: String, Sendable, Equatable, CaseIterable {
        /// A flat (raw) file, optionally at a sector offset inside it.
        case flat = "FLAT"
        /// A hosted sparse extent (KDMV) or, for old files, a COWD file.
        case sparse = "SPARSE"
        /// No file: the range reads as zeros.
        case zero = "ZERO"
        /// A flat file on VMFS (thick or thin); VMware writes a trailing offset (`... VMFS "x-flat.vmdk" 0`).
        case vmfs = "VMFS"
        /// An ESX delta extent in the COWD format (vmfsSparse snapshots).
        case vmfsSparse = "VMFSSPARSE"
        /// An ESXi space-efficient sparse extent (seSparse snapshots).
        case seSparse = "SESPARSE"
        /// A raw device mapping: a physical LUN, never a file we can read.
        case vmfsRDM = "VMFSRDM"
        /// A raw device (passthrough) mapping.
        case vmfsRaw = "VMFSRAW"
    }

    /// One extent line.
    struct ExtentLine: Sendable, Equatable {
        /// The access keyword.
        var access: Access
        /// Size of the extent in 512-byte sectors (> 0).
        var sectors: UInt64
        /// The storage type.
        var type: ExtentType
        /// The file name as written (nil for `ZERO`).
        var fileName: String?
        /// Offset in sectors inside a flat file (0 when not given).
        var offset: UInt64
        /// 1-based line number in the descriptor, for errors.
        var lineNumber: Int
    }

    /// `version=` (1 when absent).
    var version: Int
    /// `CID=` (content ID, hex), nil when absent.
    var cid: UInt32?
    /// `parentCID=` (hex), nil when absent; `0xFFFFFFFF` means "no parent".
    var parentCID: UInt32?
    /// `createType=` as written (nil when absent).
    var createType: String?
    /// `parentFileNameHint=`: the parent of a delta disk.
    var parentFileNameHint: String?
    /// The extent lines, in guest order.
    var extents: [ExtentLine]
    /// Every `key = value` pair other than the ones above, in order (mostly `ddb.*`).
    var entries: [(String, String)]
    /// Lines that were neither comments, pairs nor extent lines (line number, text), at most 16 kept.
    var ignoredLines: [(Int, String)]

    /// The value of `key` among `entries` (case-sensitive, as VMware writes them).
    subscript(key: String) -> String? { entries.first { $0.0 == key }?.1 }

    /// `parentCID` value meaning "no parent".
    static let noParentCID: UInt32 = 0xFFFF_FFFF

    /// Field-wise equality (the ignored lines are not compared).
    static func == (lhs: VMDKDescriptor, rhs: VMDKDescriptor) -> Bool {
        lhs.version == rhs.version && lhs.cid == rhs.cid && lhs.parentCID == rhs.parentCID
            && lhs.createType == rhs.createType && lhs.parentFileNameHint == rhs.parentFileNameHint
            && lhs.extents == rhs.extents && lhs.entries.elementsEqual(rhs.entries, by: { $0 == $1 })
    }

    /// Parses descriptor bytes (stopping at the first NUL, as embedded descriptors are NUL-padded).
    ///
    /// `limits.maxDescriptorBytes` must already have bounded `bytes`; `limits.maxExtents` bounds the extent lines
    /// (checked as they are counted, so 100 000 lines fail at line `maxExtents + 1`). `file` names the descriptor
    /// in errors.
    static func parse(_ bytes: [UInt8], limits: ImageLimits, file: String? = nil) throws -> VMDKDescriptor {
        let used = bytes.prefix { $0 != 0 }
        if UInt64(used.count) > limits.maxDescriptorBytes {
            throw KDCTError.limit("descriptor size", value: UInt64(used.count), limit: limits.maxDescriptorBytes, file: file)
        }
        var descriptor = VMDKDescriptor(version: 1, cid: nil, parentCID: nil, createType: nil, parentFileNameHint: nil,
                                        extents: [], entries: [], ignoredLines: [])
        var sawVersion = false
        var lineNumber = 0
        // Split on LF; a CR before it (Windows line ends) is trimmed with the other whitespace.
        for rawLine in used.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            lineNumber += 1
            let line = decodeLine(rawLine).trimmingDescriptorWhitespace()
            if line.isEmpty || line.hasPrefix("#") { continue }
            if let access = extentAccess(of: line) {
                if descriptor.extents.count >= limits.maxExtents {
                    throw KDCTError(.limitExceeded,
                                    "the descriptor lists more than \(limits.maxExtents) extents (line \(lineNumber))",
                                    file: file, field: "extents")
                }
                descriptor.extents.append(try parseExtentLine(line, access: access, lineNumber: lineNumber, file: file))
                continue
            }
            guard let equals = line.firstIndex(of: "=") else {
                if descriptor.ignoredLines.count < 16 { descriptor.ignoredLines.append((lineNumber, String(line.prefix(200)))) }
                continue
            }
            let key = String(line[..<equals]).trimmingDescriptorWhitespace()
            let value = unquote(String(line[line.index(after: equals)...]).trimmingDescriptorWhitespace())
            switch key {
            case "version":
                guard let number = Int(value), (1...3).contains(number) else {
                    throw KDCTError(.unsupported, "descriptor version \"\(value.prefix(40))\" (line \(lineNumber)); versions 1 to 3 are known",
                                    file: file, field: "version")
                }
                descriptor.version = number
                sawVersion = true
            case "CID":
                descriptor.cid = try parseCID(value, key: key, lineNumber: lineNumber, file: file)
            case "parentCID":
                descriptor.parentCID = try parseCID(value, key: key, lineNumber: lineNumber, file: file)
            case "createType":
                descriptor.createType = value
            case "parentFileNameHint":
                descriptor.parentFileNameHint = value
            default:
                descriptor.entries.append((key, value))
            }
        }
        if !sawVersion && descriptor.createType == nil && descriptor.extents.isEmpty {
            throw KDCTError(.invalidFormat, "not a VMDK descriptor: no version, createType or extent line",
                            file: file, field: "descriptor")
        }
        return descriptor
    }

    /// A descriptor line as text: UTF-8 (what VMware writes with `encoding="UTF-8"` and qemu always writes), or,
    /// when the bytes are not valid UTF-8, windows-1252 (older VMware products on Windows hosts), so a file name
    /// such as `Disk ü-flat.vmdk` resolves to the UTF-8 name the file has on a Linux file system.
    static func decodeLine(_ bytes: ArraySlice<UInt8>) -> String {
        if let text = String(validating: bytes, as: UTF8.self) { return text }
        var scalars = String.UnicodeScalarView()
        for byte in bytes {
            if (0x80...0x9F).contains(byte), let mapped = windows1252High[Int(byte - 0x80)] {
                scalars.append(mapped)
            } else {
                scalars.append(Unicode.Scalar(byte))
            }
        }
        return String(scalars)
    }

    /// windows-1252 characters for bytes 0x80-0x9F (nil where the code page leaves a byte undefined).
    private static let windows1252High: [Unicode.Scalar?] = [
        "\u{20AC}", nil, "\u{201A}", "\u{0192}", "\u{201E}", "\u{2026}", "\u{2020}", "\u{2021}",
        "\u{02C6}", "\u{2030}", "\u{0160}", "\u{2039}", "\u{0152}", nil, "\u{017D}", nil,
        nil, "\u{2018}", "\u{2019}", "\u{201C}", "\u{201D}", "\u{2022}", "\u{2013}", "\u{2014}",
        "\u{02DC}", "\u{2122}", "\u{0161}", "\u{203A}", "\u{0153}", nil, "\u{017E}", "\u{0178}",
    ]

    /// The access keyword that starts an extent line, or nil when `line` is not one.
    static func extentAccess(of line: String) -> Access? {
        for access in [Access.readWrite, .readOnly, .noAccess] {
            let keyword = access.rawValue
            guard line.hasPrefix(keyword) else { continue }
            let rest = line.dropFirst(keyword.count)
            if let next = rest.first, next == " " || next == "\t" { return access }
        }
        return nil
    }

    /// Parses `ACCESS SECTORS TYPE ["FILE" [OFFSET]]`.
    static func parseExtentLine(_ line: String, access: Access, lineNumber: Int, file: String?) throws -> ExtentLine {
        func invalid(_ why: String) -> KDCTError {
            KDCTError(.corrupt, "invalid extent line \(lineNumber) (\(why)): \(line.prefix(200))",
                      file: file, field: "extent line \(lineNumber)")
        }
        var scanner = DescriptorScanner(line)
        _ = scanner.token()  // the access keyword, already known
        guard let sizeToken = scanner.token() else { throw invalid("no size") }
        guard let sectors = UInt64(sizeToken), sectors > 0 else { throw invalid("size \"\(sizeToken.prefix(40))\" is not a positive number of sectors") }
        guard let typeToken = scanner.token() else { throw invalid("no extent type") }
        guard let type = ExtentType(rawValue: typeToken) else {
            throw KDCTError(.unsupported, "extent line \(lineNumber) has unknown type \"\(typeToken.prefix(40))\"",
                            file: file, field: "extent line \(lineNumber)")
        }
        var extent = ExtentLine(access: access, sectors: sectors, type: type, fileName: nil, offset: 0, lineNumber: lineNumber)
        if type == .zero {
            guard scanner.atEnd else { throw invalid("a ZERO extent names no file") }
            return extent
        }
        let parsedName: String?
        do { parsedName = try scanner.fileName() } catch { throw invalid("unterminated quoted file name") }
        guard let name = parsedName else { throw invalid("no file name") }
        guard !name.isEmpty else { throw invalid("empty file name") }
        extent.fileName = name
        if let offsetToken = scanner.token() {
            // FLAT lines carry the sector offset in the file; VMware also writes it on VMFS lines (qemu rejects
            // that). Raw device mappings may add a partition UUID, which we never use.
            switch type {
            case .flat, .vmfs, .vmfsRDM, .vmfsRaw:
                guard let offset = UInt64(offsetToken) else { throw invalid("offset \"\(offsetToken.prefix(40))\" is not a number") }
                extent.offset = offset
            default:
                throw invalid("unexpected \"\(offsetToken.prefix(40))\" after the file name")
            }
        }
        if type != .vmfsRDM && type != .vmfsRaw && !scanner.atEnd { throw invalid("unexpected text after the offset") }
        return extent
    }

    static func parseCID(_ value: String, key: String, lineNumber: Int, file: String?) throws -> UInt32 {
        guard !value.isEmpty, value.count <= 8, let cid = UInt32(value, radix: 16) else {
            throw KDCTError(.corrupt, "\(key) \"\(value.prefix(40))\" on line \(lineNumber) is not a 32-bit hex number",
                            file: file, field: key)
        }
        return cid
    }

    static func unquote(_ value: String) -> String {
        if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") {
            return String(value.dropFirst().dropLast())
        }
        return value
    }
}

/// Splits an extent line into whitespace-separated tokens and one quoted file name.
private struct DescriptorScanner {
    private let characters: [Character]
    private var index = 0

    init(_ line: String) { characters = Array(line) }

    var atEnd: Bool {
        var i = index
        while i < characters.count, characters[i].isDescriptorWhitespace { i += 1 }
        return i == characters.count
    }

    private mutating func skipWhitespace() {
        while index < characters.count, characters[index].isDescriptorWhitespace { index += 1 }
    }

    mutating func token() -> String? {
        skipWhitespace()
        guard index < characters.count else { return nil }
        let start = index
        while index < characters.count, !characters[index].isDescriptorWhitespace { index += 1 }
        return String(characters[start..<index])
    }

    /// A `"quoted name"` (spaces allowed, no escapes, as VMware writes it) or a bare token.
    mutating func fileName() throws -> String? {
        skipWhitespace()
        guard index < characters.count else { return nil }
        guard characters[index] == "\"" else { return token() }
        index += 1
        let start = index
        while index < characters.count, characters[index] != "\"" { index += 1 }
        guard index < characters.count else {
            throw KDCTError(.corrupt, "unterminated quoted file name in extent line", field: "extent line")
        }
        let name = String(characters[start..<index])
        index += 1
        return name
    }
}

extension Character {
    fileprivate var isDescriptorWhitespace: Bool { self == " " || self == "\t" || self == "\r" }
}

extension String {
    /// The string without leading/trailing spaces, tabs and carriage returns.
    fileprivate func trimmingDescriptorWhitespace() -> String {
        var slice = Substring(self)
        while let first = slice.first, first.isDescriptorWhitespace { slice = slice.dropFirst() }
        while let last = slice.last, last.isDescriptorWhitespace { slice = slice.dropLast() }
        return String(slice)
    }
}
