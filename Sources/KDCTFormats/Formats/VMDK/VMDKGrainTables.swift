/// Where one grain of a sparse extent lives.
public enum VMDKGrain: Sendable, Equatable {
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
public enum VMDKGrainEncoding: Sendable, Equatable {
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

/// The grain directory of one sparse extent and its grain tables: decoded and checked at open, then immutable.
///
/// When all allocated grain tables fit in what is left of the disk's `VMDKTableBudget` (`maxTableCacheBytes` in all)
/// they are read at open (adjacent tables in one read), so lookups take no lock. Otherwise tables are read on demand
/// into a cache bounded by the extent's share of `maxTableCacheBytes`, guarded by a lock held only for the
/// dictionary lookup, never across I/O.
final class VMDKGrainTables: @unchecked Sendable {
    /// The extent's geometry.
    let layout: VMDKSparseLayout
    /// File offset of each grain table; 0 when the GD entry is 0 (no table: its grains are unallocated).
    let tableOffsets: [UInt64]
    /// Allocated grain tables.
    let allocatedTables: Int
    private let file: ReadOnlyFile
    /// Eager mode: every allocated table's raw bytes, in `slots` order.
    private let eagerBytes: [UInt8]?
    /// Eager mode: slot of each GD entry in `eagerBytes` (-1 when unallocated).
    private let slots: [Int32]
    // Lazy mode.
    private let cache: BoundedCache<Int, [UInt8]>

    /// Reads the grain directory at `layout.directoryOffset` and, when small enough, every grain table.
    init(file: ReadOnlyFile, layout: VMDKSparseLayout, encoding: VMDKGrainEncoding, budget: VMDKTableBudget) throws {
        self.file = file
        self.layout = layout
        let width = layout.entryWidth
        try budget.takeDirectory(UInt64(layout.directoryEntries) * 8, file: file.path)
        let directoryBytes = try file.readBytes(count: layout.directoryEntries * width, at: layout.directoryOffset * 512,
                                                what: "grain directory")
        var offsets = [UInt64](repeating: 0, count: layout.directoryEntries)
        var allocated = 0
        try directoryBytes.withUnsafeBytes { bytes in
            for index in 0..<offsets.count {
                let entry = width == 8
                    ? UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: index * 8, as: UInt64.self))
                    : UInt64(UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: index * 4, as: UInt32.self)))
                if let offset = try encoding.tableOffset(entry, index: index, tableBytes: layout.tableBytes,
                                                         fileSize: file.size, file: file.path) {
                    offsets[index] = offset
                    allocated += 1
                }
            }
        }
        tableOffsets = offsets
        allocatedTables = allocated
        let tableBytes = layout.tableBytes
        cache = BoundedCache(capacity: Int(budget.cacheBytesPerExtent / UInt64(tableBytes)))
        let eagerTotal = UInt64(allocated) * UInt64(tableBytes)
        guard budget.takeEager(eagerTotal) else {
            eagerBytes = nil
            slots = []
            return
        }
        // Eager: read runs of tables that are adjacent in the file in one pread (VMware and qemu place them so).
        var slots = [Int32](repeating: -1, count: offsets.count)
        var bytes = [UInt8](repeating: 0, count: Int(eagerTotal))
        var slot = 0
        var index = 0
        let maxRun = max(1, (8 << 20) / tableBytes)
        try bytes.withUnsafeMutableBytes { storage in
            while index < offsets.count {
                let start = offsets[index]
                guard start != 0 else { index += 1; continue }
                var run = 1
                while run < maxRun, index + run < offsets.count, offsets[index + run] == start + UInt64(run * tableBytes) {
                    run += 1
                }
                let destination = UnsafeMutableRawBufferPointer(rebasing: storage[(slot * tableBytes)..<((slot + run) * tableBytes)])
                try file.read(into: destination, at: start, what: "grain tables \(index)..\(index + run - 1)")
                for i in 0..<run { slots[index + i] = Int32(slot + i) }
                slot += run
                index += run
            }
        }
        self.slots = slots
        eagerBytes = bytes
    }

    /// True when every grain table was read at open.
    var isEager: Bool { eagerBytes != nil }

    /// Calls `body` with the raw bytes of grain table `index` (nil when it is not allocated).
    @inline(__always)
    func withTable<R>(_ index: Int, _ body: (UnsafeRawBufferPointer?) throws -> R) throws -> R {
        guard index >= 0, index < tableOffsets.count else {
            throw KDCTError(.corrupt, "grain table \(index) is outside the grain directory (\(tableOffsets.count) entries)",
                            file: file.path, field: "grain directory")
        }
        let offset = tableOffsets[index]
        guard offset != 0 else { return try body(nil) }
        if let eagerBytes {
            let slot = Int(slots[index])
            let size = layout.tableBytes
            return try eagerBytes.withUnsafeBytes { try body(UnsafeRawBufferPointer(rebasing: $0[(slot * size)..<((slot + 1) * size)])) }
        }
        let table = try cache.value(for: index) {
            try file.readBytes(count: layout.tableBytes, at: offset, what: "grain table \(index)")
        }
        return try table.withUnsafeBytes { try body($0) }
    }
}
