/// The header of a hosted sparse extent (`KDMV`, "Virtual Disk Format 1.1", section "Hosted Sparse Extent Header"),
/// also the layout of the streamOptimized footer. 512 bytes, little-endian:
///
/// | offset | field |
/// |---|---|
/// | 0 | magic `KDMV` |
/// | 4 | version (1, 2 = zeroed-grain GTEs, 3 = streamOptimized / changed block tracking) |
/// | 8 | flags: bit 0 newline check, bit 1 redundant GD, bit 2 zeroed-grain GTEs, bit 16 compressed grains, bit 17 markers |
/// | 12 | capacity (sectors) |
/// | 20 | grain size (sectors) |
/// | 28 | descriptor offset (sectors) |
/// | 36 | descriptor size (sectors) |
/// | 44 | grain table entries per grain table |
/// | 48 | redundant grain directory offset (sectors) |
/// | 56 | grain directory offset (sectors; `0xFFFFFFFFFFFFFFFF` = in the footer) |
/// | 64 | overhead: sectors before the first grain |
/// | 72 | unclean shutdown (1 while the disk is open) |
/// | 73 | newline check bytes `\n \r\n` |
/// | 77 | compression algorithm (0 none, 1 deflate) |
struct VMDKSparseHeader: Sendable, Equatable {
    /// Size of the header (and of every marker and the footer) on disk.
    static let size = 512
    /// `KDMV`.
    static let magic: [UInt8] = Array("KDMV".utf8)
    /// `gdOffset` value meaning "the grain directory is described by the footer at the end of the file".
    static let gdAtEnd: UInt64 = 0xFFFF_FFFF_FFFF_FFFF

    /// Flag bit 0: the newline check bytes are valid.
    static let flagNewlineCheck: UInt32 = 1 << 0
    /// Flag bit 1: a redundant grain directory is kept.
    static let flagRedundantGrainDirectory: UInt32 = 1 << 1
    /// Flag bit 2: a grain table entry of 1 means "zeroed grain".
    static let flagZeroedGrainEntries: UInt32 = 1 << 2
    /// Flag bit 16: grains are compressed.
    static let flagCompressedGrains: UInt32 = 1 << 16
    /// Flag bit 17: the file holds markers (streamOptimized).
    static let flagMarkers: UInt32 = 1 << 17
    /// Every flag bit this reader understands.
    static let knownFlags: UInt32 = flagNewlineCheck | flagRedundantGrainDirectory | flagZeroedGrainEntries
        | flagCompressedGrains | flagMarkers

    /// Format version (1 to 3).
    var version: UInt32
    /// Flag bits.
    var flags: UInt32
    /// Extent size in sectors.
    var capacity: UInt64
    /// Grain size in sectors.
    var grainSize: UInt64
    /// Embedded descriptor offset in sectors (0 when none).
    var descriptorOffset: UInt64
    /// Embedded descriptor size in sectors (0 when none).
    var descriptorSize: UInt64
    /// Grain table entries per grain table.
    var entriesPerGrainTable: UInt32
    /// Redundant grain directory offset in sectors.
    var redundantGrainDirectoryOffset: UInt64
    /// Grain directory offset in sectors, or `gdAtEnd`.
    var grainDirectoryOffset: UInt64
    /// Sectors of metadata before the first grain.
    var overhead: UInt64
    /// The disk was open (or the writer crashed) when the file was copied.
    var uncleanShutdown: Bool
    /// The four newline check bytes (`0A 20 0D 0A` when intact).
    var newlineCheck: [UInt8]
    /// 0 = none, 1 = deflate (zlib streams).
    var compressAlgorithm: UInt16

    /// Grains are zlib streams.
    var isCompressed: Bool { compressAlgorithm == 1 }
    /// The file contains stream markers before grains and metadata.
    var hasMarkers: Bool { flags & Self.flagMarkers != 0 }
    /// A grain table entry of 1 means a zeroed grain.
    var hasZeroedGrainEntries: Bool { flags & Self.flagZeroedGrainEntries != 0 }
    /// The grain directory lives in the footer.
    var grainDirectoryInFooter: Bool { grainDirectoryOffset == Self.gdAtEnd }

    /// Decodes the first 512 bytes of a hosted sparse extent (or of its footer). Checks only the magic; `validate`
    /// checks the values.
    static func decode(_ bytes: [UInt8], structure: String = "VMDK sparse header") throws -> VMDKSparseHeader {
        let reader = ByteReader(bytes, structure: structure)
        guard try reader.slice(0, 4) == magic else {
            throw KDCTError(.invalidFormat, "\(structure) does not start with KDMV", field: "magic")
        }
        return VMDKSparseHeader(
            version: try reader.u32le(4),
            flags: try reader.u32le(8),
            capacity: try reader.u64le(12),
            grainSize: try reader.u64le(20),
            descriptorOffset: try reader.u64le(28),
            descriptorSize: try reader.u64le(36),
            entriesPerGrainTable: try reader.u32le(44),
            redundantGrainDirectoryOffset: try reader.u64le(48),
            grainDirectoryOffset: try reader.u64le(56),
            overhead: try reader.u64le(64),
            uncleanShutdown: try reader.u8(72) != 0,
            newlineCheck: try reader.slice(73, 4),
            compressAlgorithm: try reader.u16le(77))
    }

    /// The sparse layout this header describes, after checking every field against the file size and `limits`.
    ///
    /// Checks: version 1-3; only known flags; intact newline bytes (a file copied in FTP text mode has them
    /// rewritten); known compression; capacity fits in bytes and is not 0; grain size a power of two within
    /// `maxClusterSize`; 1-512 entries per grain table (qemu's cap; VMware writes 512); the grain directory
    /// within `maxTableBytes`; offsets inside the file. `gdAtEnd` must already be replaced by the footer's values.
    func layout(fileSize: UInt64, limits: ImageLimits, file: String? = nil) throws -> VMDKSparseLayout {
        func corrupt(_ field: String, _ message: String) -> KDCTError {
            KDCTError(.corrupt, message, file: file, field: field)
        }
        guard (1...3).contains(version) else {
            throw KDCTError(.unsupported, "hosted sparse version \(version); versions 1 to 3 are known", file: file, field: "version")
        }
        let unknown = flags & ~Self.knownFlags
        if unknown != 0 {
            throw KDCTError(.unsupported, "flags 0x\(String(flags, radix: 16)) set unknown bits 0x\(String(unknown, radix: 16))",
                            file: file, field: "flags")
        }
        if flags & Self.flagNewlineCheck != 0, newlineCheck != [0x0A, 0x20, 0x0D, 0x0A] {
            throw corrupt("newline check bytes",
                          "the newline check bytes are \(newlineCheck.map { String($0, radix: 16) }) instead of 0a 20 0d 0a: the file was altered by a text-mode transfer")
        }
        guard compressAlgorithm <= 1 else {
            throw KDCTError(.unsupported, "compression algorithm \(compressAlgorithm); only 0 (none) and 1 (deflate) are known",
                            file: file, field: "compressAlgorithm")
        }
        if hasMarkers && !isCompressed {
            throw KDCTError(.unsupported, "stream markers without compressed grains", file: file, field: "flags")
        }
        guard capacity > 0 else { throw corrupt("capacity", "capacity is 0 sectors") }
        guard capacity <= UInt64.max / 512 else { throw corrupt("capacity", "capacity \(capacity) sectors overflows a byte count") }
        let capacityBytes = capacity * 512
        try ImageLimits.check("capacity", capacityBytes, max: limits.maxVirtualSize, file: file)
        guard grainSize > 0, grainSize & (grainSize - 1) == 0, grainSize <= UInt64.max / 512 else {
            throw corrupt("grainSize", "grain size \(grainSize) sectors is not a power of two")
        }
        try ImageLimits.check("grain size", grainSize * 512, max: limits.maxClusterSize, file: file)
        guard (1...512).contains(entriesPerGrainTable) else {
            throw corrupt("numGTEsPerGT", "\(entriesPerGrainTable) grain table entries per grain table (1 to 512 allowed)")
        }
        guard grainDirectoryOffset != Self.gdAtEnd else {
            throw corrupt("gdOffset", "the grain directory offset says \"at the end\" but no valid footer supplied one")
        }
        let fileSectors = fileSize / 512
        if overhead > fileSectors {
            throw KDCTError(.truncated, "the header declares \(overhead) sectors of metadata but the file has \(fileSectors)",
                            file: file, field: "overHead")
        }
        return try VMDKSparseLayout(capacityBytes: capacityBytes, grainBytes: grainSize * 512,
                                    entriesPerTable: Int(entriesPerGrainTable), entryWidth: 4,
                                    directoryOffset: grainDirectoryOffset, fileSize: fileSize, limits: limits,
                                    directoryField: "gdOffset", file: file)
    }
}

/// Geometry of a sparse extent's two-level map: grain directory (GD) -> grain tables (GT) -> grains. Shared by
/// hosted sparse (KDMV), COWD and seSparse extents.
struct VMDKSparseLayout: Sendable, Equatable {
    /// Extent size in bytes.
    var capacityBytes: UInt64
    /// Grain size in bytes.
    var grainBytes: UInt64
    /// Entries in one grain table.
    var entriesPerTable: Int
    /// Bytes per grain table entry (4 for KDMV and COWD, 8 for seSparse); the GD uses the same width.
    var entryWidth: Int
    /// Number of grain directory entries needed to cover the capacity.
    var directoryEntries: Int
    /// Grain directory offset in sectors.
    var directoryOffset: UInt64

    /// Guest bytes one grain table covers.
    var bytesPerTable: UInt64 { grainBytes * UInt64(entriesPerTable) }
    /// On-disk size of one grain table.
    var tableBytes: Int { entriesPerTable * entryWidth }
    /// Number of grains covering the capacity.
    var grainCount: UInt64 { (capacityBytes + grainBytes - 1) / grainBytes }

    /// Computes and checks the geometry: the directory must lie inside the file and fit `maxTableBytes`.
    /// `declaredDirectoryEntries`, when the format stores it (COWD), must cover the capacity.
    init(capacityBytes: UInt64, grainBytes: UInt64, entriesPerTable: Int, entryWidth: Int,
                directoryOffset: UInt64, fileSize: UInt64, limits: ImageLimits, directoryField: String,
                declaredDirectoryEntries: UInt64? = nil, file: String? = nil) throws {
        let (span, overflow) = grainBytes.multipliedReportingOverflow(by: UInt64(entriesPerTable))
        guard !overflow, span > 0 else {
            throw KDCTError(.corrupt, "a grain table covers more than 2^64 bytes", file: file, field: "grain table size")
        }
        let needed = capacityBytes / span + (capacityBytes % span == 0 ? 0 : 1)
        if let declared = declaredDirectoryEntries, declared < needed {
            throw KDCTError(.corrupt, "the grain directory has \(declared) entries but the capacity needs \(needed)",
                            file: file, field: "numGDEntries")
        }
        let directoryBytes = needed * UInt64(entryWidth)  // needed <= capacity, so no overflow
        try ImageLimits.check("grain directory size", directoryBytes, max: limits.maxTableBytes, file: file)
        guard directoryOffset > 0 else {
            throw KDCTError(.corrupt, "grain directory offset is 0 (inside the header)", file: file, field: directoryField)
        }
        guard directoryOffset <= UInt64.max / 512, directoryOffset * 512 <= fileSize,
              directoryBytes <= fileSize - directoryOffset * 512 else {
            throw KDCTError(.corrupt,
                            "the grain directory (\(directoryBytes) bytes at sector \(directoryOffset)) lies past the end of the file (\(fileSize) bytes)",
                            file: file, field: directoryField)
        }
        self.capacityBytes = capacityBytes
        self.grainBytes = grainBytes
        self.entriesPerTable = entriesPerTable
        self.entryWidth = entryWidth
        self.directoryEntries = Int(needed)
        self.directoryOffset = directoryOffset
    }
}
