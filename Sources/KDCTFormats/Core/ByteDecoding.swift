/// Bounds-checked decoding of little- and big-endian integers and strings from a byte buffer.
///
/// On-disk structures are decoded field by field from explicit offsets (never by loading a Swift struct over the
/// bytes). Every accessor throws `corrupt`/`truncated` instead of trapping when the field lies outside the buffer,
/// so an offset computed from file data can never crash the process.
public struct ByteReader: Sendable {
    /// The bytes being decoded.
    public let bytes: [UInt8]
    /// Name of the structure, used in errors (`qcow2 header`, `VHD footer`).
    public let structure: String

    /// Wraps `bytes`, naming the structure for error messages.
    public init(_ bytes: [UInt8], structure: String) {
        self.bytes = bytes
        self.structure = structure
    }

    /// Number of bytes available.
    public var count: Int { bytes.count }

    @inline(__always)
    private func check(_ offset: Int, _ size: Int) throws {
        guard offset >= 0, size >= 0, offset <= bytes.count, size <= bytes.count - offset else {
            throw KDCTError(.truncated, "\(structure) is \(bytes.count) bytes, field at offset \(offset) of size \(size) lies outside it",
                            field: structure)
        }
    }

    /// Unsigned 8-bit value at `offset`.
    public func u8(_ offset: Int) throws -> UInt8 {
        try check(offset, 1)
        return bytes[offset]
    }

    /// Little-endian 16-bit value at `offset`.
    public func u16le(_ offset: Int) throws -> UInt16 {
        try check(offset, 2)
        return UInt16(bytes[offset]) | UInt16(bytes[offset + 1]) << 8
    }

    /// Little-endian 32-bit value at `offset`.
    public func u32le(_ offset: Int) throws -> UInt32 {
        try check(offset, 4)
        var value: UInt32 = 0
        for i in (0..<4).reversed() { value = value << 8 | UInt32(bytes[offset + i]) }
        return value
    }

    /// Little-endian 64-bit value at `offset`.
    public func u64le(_ offset: Int) throws -> UInt64 {
        try check(offset, 8)
        var value: UInt64 = 0
        for i in (0..<8).reversed() { value = value << 8 | UInt64(bytes[offset + i]) }
        return value
    }

    /// Big-endian 16-bit value at `offset`.
    public func u16be(_ offset: Int) throws -> UInt16 {
        try check(offset, 2)
        return UInt16(bytes[offset]) << 8 | UInt16(bytes[offset + 1])
    }

    /// Big-endian 32-bit value at `offset`.
    public func u32be(_ offset: Int) throws -> UInt32 {
        try check(offset, 4)
        var value: UInt32 = 0
        for i in 0..<4 { value = value << 8 | UInt32(bytes[offset + i]) }
        return value
    }

    /// Big-endian 64-bit value at `offset`.
    public func u64be(_ offset: Int) throws -> UInt64 {
        try check(offset, 8)
        var value: UInt64 = 0
        for i in 0..<8 { value = value << 8 | UInt64(bytes[offset + i]) }
        return value
    }

    /// `count` raw bytes at `offset`.
    public func slice(_ offset: Int, _ count: Int) throws -> [UInt8] {
        try check(offset, count)
        return Array(bytes[offset..<(offset + count)])
    }

    /// Bytes at `offset` as Latin-1/ASCII text, stopping at the first NUL.
    public func ascii(_ offset: Int, _ count: Int) throws -> String {
        let raw = try slice(offset, count)
        let used = raw.prefix { $0 != 0 }
        return String(decoding: used.map { $0 < 0x80 ? $0 : UInt8(ascii: "?") }, as: UTF8.self)
    }

    /// Bytes at `offset` as UTF-16LE text, stopping at the first NUL code unit.
    public func utf16le(_ offset: Int, _ count: Int) throws -> String {
        let raw = try slice(offset, count)
        var units: [UInt16] = []
        units.reserveCapacity(count / 2)
        var i = 0
        while i + 1 < raw.count {
            let unit = UInt16(raw[i]) | UInt16(raw[i + 1]) << 8
            if unit == 0 { break }
            units.append(unit)
            i += 2
        }
        return String(decoding: units, as: UTF16.self)
    }

    /// Bytes at `offset` as UTF-16BE text, stopping at the first NUL code unit.
    public func utf16be(_ offset: Int, _ count: Int) throws -> String {
        let raw = try slice(offset, count)
        var units: [UInt16] = []
        var i = 0
        while i + 1 < raw.count {
            let unit = UInt16(raw[i]) << 8 | UInt16(raw[i + 1])
            if unit == 0 { break }
            units.append(unit)
            i += 2
        }
        return String(decoding: units, as: UTF16.self)
    }

    /// 16 bytes at `offset` formatted as a UUID in the mixed-endian GUID layout Microsoft and VirtualBox use
    /// (first three fields little-endian).
    public func guid(_ offset: Int) throws -> String {
        let b = try slice(offset, 16)
        let hex = { (r: [UInt8]) in r.map { String($0, radix: 16).leftPadded(to: 2) }.joined() }
        return [hex(b[0..<4].reversed()), hex(b[4..<6].reversed()), hex(b[6..<8].reversed()),
                hex(Array(b[8..<10])), hex(Array(b[10..<16]))].joined(separator: "-")
    }

    /// 16 bytes at `offset` formatted as a UUID in network (big-endian) byte order.
    public func uuidBigEndian(_ offset: Int) throws -> String {
        let b = try slice(offset, 16)
        let hex = { (r: ArraySlice<UInt8>) in r.map { String($0, radix: 16).leftPadded(to: 2) }.joined() }
        return [hex(b[0..<4]), hex(b[4..<6]), hex(b[6..<8]), hex(b[8..<10]), hex(b[10..<16])].joined(separator: "-")
    }
}

extension String {
    /// The string padded on the left with `pad` to at least `width` characters.
    func leftPadded(to width: Int, with pad: Character = "0") -> String {
        count >= width ? self : String(repeating: pad, count: width - count) + self
    }
}

/// Bulk decoders for on-disk tables (L1/L2 tables, block maps, BATs): one pass, explicit endianness.
public enum TableDecoding {
    /// Decodes `bytes` as consecutive big-endian 64-bit entries.
    public static func uint64BigEndian(_ bytes: UnsafeRawBufferPointer) -> [UInt64] {
        let count = bytes.count / 8
        return [UInt64](unsafeUninitializedCapacity: count) { buffer, initialized in
            for i in 0..<count { buffer[i] = UInt64(bigEndian: bytes.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self)) }
            initialized = count
        }
    }

    /// Decodes `bytes` as consecutive little-endian 64-bit entries.
    public static func uint64LittleEndian(_ bytes: UnsafeRawBufferPointer) -> [UInt64] {
        let count = bytes.count / 8
        return [UInt64](unsafeUninitializedCapacity: count) { buffer, initialized in
            for i in 0..<count { buffer[i] = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self)) }
            initialized = count
        }
    }

    /// Decodes `bytes` as consecutive big-endian 32-bit entries.
    public static func uint32BigEndian(_ bytes: UnsafeRawBufferPointer) -> [UInt32] {
        let count = bytes.count / 4
        return [UInt32](unsafeUninitializedCapacity: count) { buffer, initialized in
            for i in 0..<count { buffer[i] = UInt32(bigEndian: bytes.loadUnaligned(fromByteOffset: i * 4, as: UInt32.self)) }
            initialized = count
        }
    }

    /// Decodes `bytes` as consecutive little-endian 32-bit entries.
    public static func uint32LittleEndian(_ bytes: UnsafeRawBufferPointer) -> [UInt32] {
        let count = bytes.count / 4
        return [UInt32](unsafeUninitializedCapacity: count) { buffer, initialized in
            for i in 0..<count { buffer[i] = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: i * 4, as: UInt32.self)) }
            initialized = count
        }
    }

    /// Same as above for arrays.
    public static func uint64BigEndian(_ bytes: [UInt8]) -> [UInt64] { bytes.withUnsafeBytes { uint64BigEndian($0) } }
    /// Same as above for arrays.
    public static func uint64LittleEndian(_ bytes: [UInt8]) -> [UInt64] { bytes.withUnsafeBytes { uint64LittleEndian($0) } }
    /// Same as above for arrays.
    public static func uint32BigEndian(_ bytes: [UInt8]) -> [UInt32] { bytes.withUnsafeBytes { uint32BigEndian($0) } }
    /// Same as above for arrays.
    public static func uint32LittleEndian(_ bytes: [UInt8]) -> [UInt32] { bytes.withUnsafeBytes { uint32LittleEndian($0) } }
}

/// Byte encoding for the structures the writers produce.
public struct ByteWriter {
    /// The bytes written so far (fixed size, zero-filled at creation).
    public private(set) var bytes: [UInt8]

    /// A zero-filled buffer of `count` bytes.
    public init(count: Int) { bytes = [UInt8](repeating: 0, count: count) }

    /// Stores `value` big-endian at `offset`.
    public mutating func u16be(_ value: UInt16, at offset: Int) { put(UInt64(value), size: 2, at: offset, bigEndian: true) }
    /// Stores `value` big-endian at `offset`.
    public mutating func u32be(_ value: UInt32, at offset: Int) { put(UInt64(value), size: 4, at: offset, bigEndian: true) }
    /// Stores `value` big-endian at `offset`.
    public mutating func u64be(_ value: UInt64, at offset: Int) { put(value, size: 8, at: offset, bigEndian: true) }
    /// Stores `value` little-endian at `offset`.
    public mutating func u16le(_ value: UInt16, at offset: Int) { put(UInt64(value), size: 2, at: offset, bigEndian: false) }
    /// Stores `value` little-endian at `offset`.
    public mutating func u32le(_ value: UInt32, at offset: Int) { put(UInt64(value), size: 4, at: offset, bigEndian: false) }
    /// Stores `value` little-endian at `offset`.
    public mutating func u64le(_ value: UInt64, at offset: Int) { put(value, size: 8, at: offset, bigEndian: false) }
    /// Stores a single byte.
    public mutating func u8(_ value: UInt8, at offset: Int) { bytes[offset] = value }
    /// Copies `data` to `offset`.
    public mutating func put(_ data: [UInt8], at offset: Int) { bytes.replaceSubrange(offset..<(offset + data.count), with: data) }

    private mutating func put(_ value: UInt64, size: Int, at offset: Int, bigEndian: Bool) {
        for i in 0..<size {
            let shift = bigEndian ? (size - 1 - i) * 8 : i * 8
            bytes[offset + i] = UInt8(truncatingIfNeeded: value >> UInt64(shift))
        }
    }
}
