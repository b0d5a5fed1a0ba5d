/// Where one grain of a sparse extent lives.
enum VMDKGrain: Sendable, Equatable {
    /// Not present in this layer (reads from the parent, or as zeros without one).
    case unallocated
    /// Explicitly zero (zeroed-grain GTE, seSparse zero or unmapped grain).
    case zero
    /// Stored uncompressed at this file offset.
    case data(UInt64)
    /// Stored compressed (a zlib stream, after a grain marker in streamOptimized files) at this file offset.
    case compressed(UInt64)
}

/// How the grain directory and grain table entries of one sparse flavour are encoded.
enum VMDKGrainEncoding: Sendable, Equatable {
    /// Hosted sparse (KDMV): 32-bit sector numbers; 0 = unallocated, 1 = zeroed grain when the header enables it.
    case hosted(zeroedGrainEntries: Bool, compressed: Bool)
    /// COWD (vmfsSparse): 32-bit sector numbers; 0 = unallocated.
    case cowd
    /// seSparse: 64-bit entries with a type in the top nibble (qemu's block/vmdk.c): GD `0x1000_0000_xxxx_xxxx` =
    /// grain table number; GTE `0` unallocated, `1…` unmapped (zero), `2…` zero, `3…` allocated grain number
    /// (`((e & 0x0fff_0000_0000_0000) >> 48) | ((e & 0x0000_ffff_ffff_ffff) << 12)`).
    case seSparse(grainTablesOffset: UInt64, grainTablesBytes: UInt64, grainsOffset: UInt64)

    /// Decodes grain table entry `raw` of a grain needing `needed` bytes; checks it against the file size.
    /// `describe` names the entry and its guest offset for errors.
    @inline(__always)
    func grain(_ raw: UInt64, grainBytes: UInt64, needed: UInt64, fileSize: UInt64, file: String,
               describe: () -> String) throws -> VMDKGrain {
        let location: VMDKGrain
        switch self {
        case let .hosted(zeroed, compressed):
            if raw == 0 { return .unallocated }
            if raw == 1 {
                if zeroed { return .zero }
                throw KDCTError(.corrupt, "\(describe()) is 1 (a zeroed-grain marker) but the header does not enable zeroed-grain entries",
                                file: file, field: "grain table entry")
            }
            location = compressed ? .compressed(raw * 512) : .data(raw * 512)
        case .cowd:
            if raw == 0 { return .unallocated }
            location = .data(raw * 512)
        case let .seSparse(_, _, grainsOffset):
            switch raw >> 60 {
            case 0:
                if raw == 0 { return .unallocated }
                throw KDCTError(.corrupt, "\(describe()) 0x\(String(raw, radix: 16)) has type 0 (unallocated) but non-zero bits",
                                file: file, field: "grain table entry")
            case 1, 2:
                return .zero
            case 3:
                let number = ((raw & 0x0FFF_0000_0000_0000) >> 48) | ((raw & 0x0000_FFFF_FFFF_FFFF) << 12)
                let (relative, overflow1) = number.multipliedReportingOverflow(by: grainBytes)
                let (offset, overflow2) = grainsOffset.addingReportingOverflow(relative)
                if overflow1 || overflow2 {
                    throw KDCTError(.corrupt, "\(describe()) 0x\(String(raw, radix: 16)) points past the end of the file",
                                    file: file, field: "grain table entry")
                }
                location = .data(offset)
            default:
                throw KDCTError(.corrupt, "\(describe()) 0x\(String(raw, radix: 16)) has an unknown type \(raw >> 60)",
                                file: file, field: "grain table entry")
            }
        }
        // A grain must lie inside the file: never read a pointer past the end as zeros.
        switch location {
        case let .data(offset):
            if offset > fileSize || needed > fileSize - offset {
                throw KDCTError(.corrupt,
                                "\(describe()) points to file offset \(offset), past the end of the file (\(fileSize) bytes; the file may be truncated)",
                                file: file, field: "grain table entry")
            }
        case let .compressed(offset):
            if offset >= fileSize {
                throw KDCTError(.corrupt,
                                "\(describe()) points to file offset \(offset), past the end of the file (\(fileSize) bytes; the file may be truncated)",
                                file: file, field: "grain table entry")
            }
        default:
            break
        }
        return location
    }

    /// Decodes grain directory entry `raw` to the file offset of its grain table (nil = no table: every grain it
    /// covers is unallocated), checking that the table lies inside the file.
    func tableOffset(_ raw: UInt64, index: Int, tableBytes: Int, fileSize: UInt64, file: String) throws -> UInt64? {
        if raw == 0 { return nil }
        let offset: UInt64
        switch self {
        case .hosted, .cowd:
            offset = raw * 512  // raw is a 32-bit sector number
        case let .seSparse(tablesOffset, tablesBytes, _):
            guard raw & 0xFFFF_FFFF_0000_0000 == 0x1000_0000_0000_0000 else {
                throw KDCTError(.corrupt, "grain directory entry \(index) is 0x\(String(raw, radix: 16)), not an allocated grain table",
                                file: file, field: "grain directory entry \(index)")
            }
            let relative = (raw & 0xFFFF_FFFF) * UInt64(tableBytes)
            guard relative < tablesBytes else {
                throw KDCTError(.corrupt, "grain directory entry \(index) names grain table \(raw & 0xFFFF_FFFF), outside the grain table area",
                                file: file, field: "grain directory entry \(index)")
            }
            offset = tablesOffset + relative
        }
        if offset < 512 {
            throw KDCTError(.corrupt, "grain directory entry \(index) points to a grain table inside the header (file offset \(offset))",
                            file: file, field: "grain directory entry \(index)")
        }
        if offset > fileSize || UInt64(tableBytes) > fileSize - offset {
            throw KDCTError(.corrupt,
                            "grain directory entry \(index) points to a grain table at file offset \(offset), past the end of the file (\(fileSize) bytes)",
                            file: file, field: "grain directory entry \(index)")
        }
        return offset
    }
}

/// The table memory one disk may use, shared by all its sparse extents while they are opened: a descriptor that
/// lists the same sparse file 4096 times must not get 4096 times the limits.
///
/// - Grain directories (8 bytes in memory per entry) together stay within `maxTableBytes`.
/// - Grain tables read at open together stay within `maxTableCacheBytes`; later extents use the cache.
/// - Each extent's table cache gets an equal share of `maxTableCacheBytes` (at least one table).
final class VMDKTableBudget {
    let limits: ImageLimits
    private(set) var remainingDirectoryBytes: UInt64
    private(set) var remainingEagerBytes: UInt64
    /// Bytes of cached tables each extent may keep.
    let cacheBytesPerExtent: UInt64

    /// A budget for a disk with `sparseExtents` sparse extents.
    init(limits: ImageLimits, sparseExtents: Int) {
        self.limits = limits
        remainingDirectoryBytes = limits.maxTableBytes
        remainingEagerBytes = min(limits.maxTableCacheBytes, limits.maxTableBytes)
        cacheBytesPerExtent = limits.maxTableCacheBytes / UInt64(max(1, sparseExtents))
    }

    /// Takes `bytes` of grain directory memory or throws `limitExceeded`.
    func takeDirectory(_ bytes: UInt64, file: String) throws {
        guard bytes <= remainingDirectoryBytes else {
            throw KDCTError(.limitExceeded,
                            "the grain directories of this disk need more than \(limits.maxTableBytes) bytes in memory (limit maxTableBytes)",
                            file: file, field: "grain directory size")
        }
        remainingDirectoryBytes -= bytes
    }

    /// Takes `bytes` for tables read at open, if they fit.
    func takeEager(_ bytes: UInt64) -> Bool {
        guard bytes <= remainingEagerBytes else { return false }
        remainingEagerBytes -= bytes
        return true
    }
}
