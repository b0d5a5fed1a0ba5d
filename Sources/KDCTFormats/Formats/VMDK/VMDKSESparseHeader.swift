/// The headers of an ESXi seSparse ("space-efficient sparse") extent, the snapshot format of VMFS 6 and of disks
/// over 2 TiB. The format is not published; the layout follows qemu's block/vmdk.c, which reads it with strict
/// checks, and so do we.
///
/// Constant header (sector 0), 64-bit little-endian fields: magic `0xCAFEBABE`, version `0x200000001`, capacity,
/// grain size (8 sectors), grain table size (64 sectors = 4096 entries), flags (0), four reserved words (0), then
/// offset/size pairs in sectors for: volatile header, journal header, journal, grain directory, grain tables, free
/// bitmap, back map, grains; the rest of the sector is zero.
///
/// Volatile header (at its offset): magic `0xCAFECAFE`, free GT number, next transaction, replay-journal flag.
struct VMDKSESparseHeader: Sendable, Equatable {
    /// Magic of the constant header.
    static let constMagic: UInt64 = 0xCAFE_BABE
    /// Magic of the volatile header.
    static let volatileMagic: UInt64 = 0xCAFE_CAFE
    /// The only version known.
    static let knownVersion: UInt64 = 0x2_0000_0001

    /// Capacity in sectors.
    var capacity: UInt64
    /// Grain size in sectors (8).
    var grainSize: UInt64
    /// Grain table size in sectors (64).
    var grainTableSize: UInt64
    /// Volatile header offset in sectors.
    var volatileHeaderOffset: UInt64
    /// Grain directory offset in sectors.
    var grainDirectoryOffset: UInt64
    /// Grain directory size in sectors.
    var grainDirectorySize: UInt64
    /// Grain tables area offset in sectors.
    var grainTablesOffset: UInt64
    /// Grain tables area size in sectors.
    var grainTablesSize: UInt64
    /// Grains area offset in sectors.
    var grainsOffset: UInt64
    /// Grains area size in sectors.
    var grainsSize: UInt64

    /// Decodes and checks the 512-byte constant header (qemu's strict checks: version, grain size 8, grain table
    /// size 64, flags and reserved words 0, zero padding).
    static func decode(_ bytes: [UInt8], file: String? = nil) throws -> VMDKSESparseHeader {
        let reader = ByteReader(bytes, structure: "seSparse constant header")
        guard try reader.u64le(0) == constMagic else {
            throw KDCTError(.invalidFormat, "seSparse constant header has a bad magic", file: file, field: "magic")
        }
        func unsupported(_ field: String, _ value: UInt64) -> KDCTError {
            KDCTError(.unsupported, "seSparse \(field) 0x\(String(value, radix: 16)) is not supported", file: file, field: field)
        }
        let version = try reader.u64le(8)
        guard version == knownVersion else { throw unsupported("version", version) }
        let grainSize = try reader.u64le(24)
        guard grainSize == 8 else { throw unsupported("grain size", grainSize) }
        let grainTableSize = try reader.u64le(32)
        guard grainTableSize == 64 else { throw unsupported("grain table size", grainTableSize) }
        let flags = try reader.u64le(40)
        guard flags == 0 else { throw unsupported("flags", flags) }
        for (index, offset) in [48, 56, 64, 72].enumerated() {
            let value = try reader.u64le(offset)
            guard value == 0 else { throw unsupported("reserved\(index + 1)", value) }
        }
        guard try reader.slice(208, 304).allSatisfy({ $0 == 0 }) else {
            throw KDCTError(.unsupported, "seSparse constant header has non-zero padding", file: file, field: "padding")
        }
        return VMDKSESparseHeader(capacity: try reader.u64le(16), grainSize: grainSize, grainTableSize: grainTableSize,
                                  volatileHeaderOffset: try reader.u64le(80),
                                  grainDirectoryOffset: try reader.u64le(128), grainDirectorySize: try reader.u64le(136),
                                  grainTablesOffset: try reader.u64le(144), grainTablesSize: try reader.u64le(152),
                                  grainsOffset: try reader.u64le(192), grainsSize: try reader.u64le(200))
    }

    /// Checks the 512-byte volatile header: magic, no journal to replay (a dirty seSparse file is refused, as qemu
    /// does: replaying its journal is not implemented), zero padding.
    static func checkVolatileHeader(_ bytes: [UInt8], file: String? = nil) throws {
        let reader = ByteReader(bytes, structure: "seSparse volatile header")
        guard try reader.u64le(0) == volatileMagic else {
            throw KDCTError(.corrupt, "seSparse volatile header has a bad magic", file: file, field: "volatile header magic")
        }
        guard try reader.u64le(24) == 0 else {
            throw KDCTError(.unsupported, "the seSparse journal must be replayed (the disk was not closed cleanly); replay is not implemented",
                            file: file, field: "replayJournal")
        }
        guard try reader.slice(32, 480).allSatisfy({ $0 == 0 }) else {
            throw KDCTError(.unsupported, "seSparse volatile header has non-zero padding", file: file, field: "volatile padding")
        }
    }

    /// The checked sparse geometry (8-byte entries, 4096 per grain table). The grain directory must lie in the file;
    /// grain tables and grains are checked against the file size as they are used.
    func layout(fileSize: UInt64, limits: ImageLimits, file: String? = nil) throws -> VMDKSparseLayout {
        guard capacity > 0 else { throw KDCTError(.corrupt, "seSparse capacity is 0 sectors", file: file, field: "capacity") }
        guard capacity <= UInt64.max / 512 else {
            throw KDCTError(.corrupt, "seSparse capacity \(capacity) sectors overflows a byte count", file: file, field: "capacity")
        }
        try ImageLimits.check("capacity", capacity * 512, max: limits.maxVirtualSize, file: file)
        guard grainTablesOffset <= UInt64.max / 512, grainsOffset <= UInt64.max / 512,
              grainDirectorySize <= UInt64.max / 512 else {
            throw KDCTError(.corrupt, "seSparse area offsets overflow", file: file, field: "offsets")
        }
        let layout = try VMDKSparseLayout(capacityBytes: capacity * 512, grainBytes: grainSize * 512,
                                          entriesPerTable: Int(grainTableSize * 512 / 8), entryWidth: 8,
                                          directoryOffset: grainDirectoryOffset, fileSize: fileSize, limits: limits,
                                          directoryField: "grain_dir_offset",
                                          declaredDirectoryEntries: grainDirectorySize * 512 / 8, file: file)
        return layout
    }
}
