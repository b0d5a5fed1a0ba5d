/// The header of a COWD sparse extent: ESX's vmfsSparse delta disks (`-delta.vmdk`) and the sparse files of very old
/// VMware products. 2048 bytes, little-endian (VMware's `COWDisk_Header`):
///
/// | offset | field |
/// |---|---|
/// | 0 | magic `COWD` |
/// | 4 | version (1) |
/// | 8 | flags: 1 root (no parent), 2 check-capable, 4 inconsistent (not closed cleanly) |
/// | 12 | capacity (sectors, 32-bit) |
/// | 16 | grain size (sectors; ESX uses 1) |
/// | 20 | grain directory ("root entries") offset (sectors) |
/// | 24 | grain directory entries |
/// | 28 | next free sector |
/// | 32 | root: geometry / child: parent file name (1024 bytes) + parent generation |
///
/// Every grain table has 4096 32-bit entries (sector of the grain, 0 = not present in this layer).
struct VMDKCOWDHeader: Sendable, Equatable {
    /// Bytes decoded (the header occupies 4 sectors).
    static let size = 2048
    /// `COWD`.
    static let magic: [UInt8] = Array("COWD".utf8)
    /// Entries in every COWD grain table (`COW_NUM_LEAF_ENTRIES`).
    static let entriesPerGrainTable = 4096
    /// Flag: the disk was not closed cleanly.
    static let flagInconsistent: UInt32 = 4

    /// Format version.
    var version: UInt32
    /// Flag bits.
    var flags: UInt32
    /// Extent size in sectors.
    var capacity: UInt32
    /// Grain size in sectors.
    var grainSize: UInt32
    /// Grain directory offset in sectors.
    var grainDirectoryOffset: UInt32
    /// Grain directory entries.
    var grainDirectoryEntries: UInt32
    /// Next free sector (informational; the file length is the truth).
    var freeSector: UInt32

    /// The disk was open when the file was copied.
    var inconsistent: Bool { flags & Self.flagInconsistent != 0 }

    /// Decodes the first bytes of a COWD file (at least the 32 fixed bytes).
    static func decode(_ bytes: [UInt8]) throws -> VMDKCOWDHeader {
        let reader = ByteReader(bytes, structure: "COWD header")
        guard try reader.slice(0, 4) == magic else {
            throw KDCTError(.invalidFormat, "COWD header does not start with COWD", field: "magic")
        }
        return VMDKCOWDHeader(version: try reader.u32le(4), flags: try reader.u32le(8), capacity: try reader.u32le(12),
                              grainSize: try reader.u32le(16), grainDirectoryOffset: try reader.u32le(20),
                              grainDirectoryEntries: try reader.u32le(24), freeSector: try reader.u32le(28))
    }

    /// The checked sparse geometry: version 1, capacity > 0, a grain size that is a power of two within
    /// `maxClusterSize`, and a grain directory inside the file covering the capacity.
    func layout(fileSize: UInt64, limits: ImageLimits, file: String? = nil) throws -> VMDKSparseLayout {
        guard version == 1 else {
            throw KDCTError(.unsupported, "COWD version \(version); only version 1 is known", file: file, field: "version")
        }
        guard capacity > 0 else { throw KDCTError(.corrupt, "COWD capacity is 0 sectors", file: file, field: "numSectors") }
        guard grainSize > 0, grainSize & (grainSize - 1) == 0 else {
            throw KDCTError(.corrupt, "COWD grain size \(grainSize) sectors is not a power of two", file: file, field: "granularity")
        }
        try ImageLimits.check("grain size", UInt64(grainSize) * 512, max: limits.maxClusterSize, file: file)
        return try VMDKSparseLayout(capacityBytes: UInt64(capacity) * 512, grainBytes: UInt64(grainSize) * 512,
                                    entriesPerTable: Self.entriesPerGrainTable, entryWidth: 4,
                                    directoryOffset: UInt64(grainDirectoryOffset), fileSize: fileSize, limits: limits,
                                    directoryField: "rootOffset", declaredDirectoryEntries: UInt64(grainDirectoryEntries),
                                    file: file)
    }
}
