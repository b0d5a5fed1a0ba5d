/// The 1024-byte dynamic disk header of a dynamic or differencing VHD (specification, "Dynamic Disk Header
/// Format"), found at the footer's `Data Offset`. Big-endian.
struct VHDDynamicHeader: Sendable, Equatable {
    /// Size of the structure.
    static let size = 1024
    /// The cookie it starts with.
    static let cookie: [UInt8] = Array("cxsparse".utf8)
    /// Bytes needed to decode the block table geometry (cookie through block size), the part checked before
    /// anything else.
    static let geometryFieldsSize = 36

    /// One of the eight parent locator entries.
    struct ParentLocatorEntry: Sendable, Equatable {
        /// `Platform Code` as four raw bytes (`W2ru`, `W2ku`, `Mac `, `MacX`, `Wi2r`, `Wi2k`).
        var platformCode: [UInt8]
        /// `Platform Data Space` (sectors per the specification; many writers store bytes).
        var dataSpace: UInt32
        /// `Platform Data Length` in bytes.
        var dataLength: UInt32
        /// `Platform Data Offset`: file offset of the locator data.
        var dataOffset: UInt64

        /// The platform code as text.
        var platformText: String { VHDFooter.fourCC(platformCode) }
    }

    /// `Table Offset`: file offset of the block allocation table.
    var tableOffset: UInt64
    /// `Header Version` (0x00010000).
    var headerVersion: UInt32
    /// `Max Table Entries`: BAT entries stored.
    var maxTableEntries: UInt32
    /// `Block Size` in bytes (2 MiB by default; a power of two).
    var blockSize: UInt32
    /// `Checksum` as stored.
    var checksum: UInt32
    /// The checksum computed over the header (nil when the header was decoded from a short buffer).
    var computedChecksum: UInt32?
    /// `Parent Unique ID` (16 raw bytes; zero for a dynamic disk).
    var parentUniqueID: [UInt8]
    /// `Parent Time Stamp`: the parent's modification time, seconds since 2000-01-01 UTC.
    var parentTimestamp: UInt32
    /// `Parent Unicode Name` (UTF-16BE in the file).
    var parentName: String
    /// The parent locator entries whose platform code is not zero, in stored order.
    var parentLocators: [ParentLocatorEntry]

    /// True when the stored checksum matches the content.
    var checksumIsValid: Bool { computedChecksum == checksum }

    /// Decodes the block table geometry fields from the first `geometryFieldsSize` bytes (or more), so an
    /// impossible table can be reported even when the rest of the header is missing or damaged.
    static func decodeGeometry(_ bytes: [UInt8]) throws -> (tableOffset: UInt64, maxTableEntries: UInt32, blockSize: UInt32) {
        guard bytes.count >= 8, Array(bytes[0..<8]) == cookie else {
            throw KDCTError.corrupt("dynamic disk header has no \"cxsparse\" cookie", field: "dynamic header cookie")
        }
        let r = ByteReader(bytes, structure: "VHD dynamic disk header")
        return (try r.u64be(16), try r.u32be(28), try r.u32be(32))
    }

    /// Decodes the whole 1024-byte header; the checksum is computed, not enforced.
    static func decode(_ bytes: [UInt8]) throws -> VHDDynamicHeader {
        let geometry = try decodeGeometry(bytes)
        guard bytes.count >= size else {
            throw KDCTError(.truncated, "dynamic disk header needs \(size) bytes, only \(bytes.count) available",
                            field: "dynamic header")
        }
        let r = ByteReader(bytes, structure: "VHD dynamic disk header")
        var locators: [ParentLocatorEntry] = []
        for index in 0..<8 {
            let base = 576 + index * 24
            let code = try r.slice(base, 4)
            if code == [0, 0, 0, 0] { continue }
            locators.append(ParentLocatorEntry(platformCode: code, dataSpace: try r.u32be(base + 4),
                                               dataLength: try r.u32be(base + 8), dataOffset: try r.u64be(base + 16)))
        }
        return VHDDynamicHeader(
            tableOffset: geometry.tableOffset,
            headerVersion: try r.u32be(24),
            maxTableEntries: geometry.maxTableEntries,
            blockSize: geometry.blockSize,
            checksum: try r.u32be(36),
            computedChecksum: VHDFooter.onesComplementChecksum(Array(bytes[0..<size]), skipping: 36..<40),
            parentUniqueID: try r.slice(40, 16),
            parentTimestamp: try r.u32be(56),
            parentName: try r.utf16be(64, 512),
            parentLocators: locators)
    }

    /// Bytes of the per-block sector bitmap as stored: one bit per 512-byte sector, padded to whole sectors.
    static func bitmapSize(blockSize: UInt32) -> UInt64 {
        let bits = UInt64(blockSize) / 512
        let bytes = (bits + 7) / 8
        return (bytes + 511) / 512 * 512
    }
}
