import Foundation

/// Byte-level reading and patching of test images (all test images are a few MiB, so whole-file reads are fine).
public enum ImageBytes {
    /// The whole file.
    public static func read(_ path: String) throws -> [UInt8] {
        [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
    }

    /// Replaces the file's content.
    public static func write(_ bytes: [UInt8], to path: String) throws {
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }

    /// Overwrites `bytes` at `offset` (extending the file if needed).
    public static func patch(_ path: String, at offset: Int, _ bytes: [UInt8]) throws {
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        try handle.seek(toOffset: UInt64(offset))
        handle.write(Data(bytes))
    }

    /// Appends `bytes` to the file.
    public static func append(_ path: String, _ bytes: [UInt8]) throws {
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        try handle.seekToEnd()
        handle.write(Data(bytes))
    }

    /// The bytes of `value`, big-endian (be) or little-endian (le).
    public static func be16(_ value: UInt16) -> [UInt8] { [UInt8(value >> 8), UInt8(value & 0xFF)] }
    public static func be32(_ value: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: value >> (24 - 8 * $0)) } }
    public static func be64(_ value: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: value >> (56 - 8 * $0)) } }
    public static func le32(_ value: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) } }
    public static func le64(_ value: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) } }

    /// Big-endian integer of `width` bytes at `offset` of the file.
    public static func bigEndian(_ path: String, at offset: Int, width: Int) throws -> UInt64 {
        let bytes = try read(path)
        return bytes[offset..<(offset + width)].reduce(0) { $0 << 8 | UInt64($1) }
    }

    /// Little-endian integer of `width` bytes at `offset` of the file.
    public static func littleEndian(_ path: String, at offset: Int, width: Int) throws -> UInt64 {
        let bytes = try read(path)
        return bytes[offset..<(offset + width)].reversed().reduce(0) { $0 << 8 | UInt64($1) }
    }
}
