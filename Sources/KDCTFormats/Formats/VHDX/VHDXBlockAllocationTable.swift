/// Payload block states ([MS-VHDX] 2.5.1.1).
enum VHDXPayloadState: UInt8, Sendable {
    /// Not stored: undefined in a fixed/dynamic disk (read as zeros), the parent's data in a differencing one.
    case notPresent = 0
    /// Undefined content (read as zeros, or from the parent in a differencing disk).
    case undefined = 1
    /// Reads as zeros.
    case zero = 2
    /// Unmapped (trimmed): reads as zeros.
    case unmapped = 3
    /// Stored in full at the entry's file offset.
    case fullyPresent = 6
    /// Differencing disks only: stored at the file offset for the sectors the sector bitmap marks.
    case partiallyPresent = 7
}

/// Where blocks live: chunk ratio, entry counts and the interleaving of payload and sector bitmap entries
/// ([MS-VHDX] 2.4, 2.5).
struct VHDXBATGeometry: Sendable, Equatable {
    /// Payload block size.
    var blockSize: UInt64
    /// Logical sector size (one sector bitmap bit each).
    var logicalSectorSize: UInt64
    /// Payload blocks per sector bitmap block: 2^23 × logical sector size / block size.
    var chunkRatio: UInt64
    /// Payload blocks covering the virtual disk.
    var dataBlocks: UInt64
    /// Sector bitmap blocks covering them.
    var bitmapBlocks: UInt64
    /// BAT entries required.
    var totalEntries: UInt64
    /// Logical sectors per payload block.
    var sectorsPerBlock: UInt64

    /// Sector bitmap blocks are 1 MiB: 2^23 bits.
    static let sectorsPerBitmapBlock: UInt64 = 1 << 23

    /// The geometry of a disk with `parameters`.
    init(_ parameters: VHDXDiskParameters) {
        blockSize = UInt64(parameters.blockSize)
        logicalSectorSize = UInt64(parameters.logicalSectorSize)
        chunkRatio = Self.sectorsPerBitmapBlock * logicalSectorSize / blockSize
        dataBlocks = (parameters.virtualDiskSize + blockSize - 1) / blockSize
        bitmapBlocks = (dataBlocks + chunkRatio - 1) / chunkRatio
        if parameters.hasParent {
            totalEntries = bitmapBlocks * (chunkRatio + 1)
        } else {
            totalEntries = dataBlocks == 0 ? 0 : dataBlocks + (dataBlocks - 1) / chunkRatio
        }
        sectorsPerBlock = blockSize / logicalSectorSize
    }

    /// BAT index of payload block `block`: the sector bitmap entry of each chunk follows its payload entries.
    @inline(__always)
    func payloadIndex(_ block: UInt64) -> Int { Int(block + block / chunkRatio) }

    /// BAT index of the sector bitmap entry of chunk `chunk`.
    @inline(__always)
    func bitmapIndex(chunk: UInt64) -> Int { Int(chunk * (chunkRatio + 1) + chunkRatio) }
}

/// A decoded BAT entry.
struct VHDXBATEntry: Sendable, Equatable {
    /// The raw 64-bit value.
    var raw: UInt64
    /// State bits (0-2).
    @inline(__always) var state: UInt8 { UInt8(raw & 7) }
    /// Reserved bits 3-19 (must be zero).
    @inline(__always) var reservedBits: UInt64 { (raw >> 3) & 0x1FFFF }
    /// File offset of the block: `FileOffsetMB` × 1 MiB.
    @inline(__always) var fileOffset: UInt64 { (raw >> 20) << 20 }
}

/// The block allocation table, validated against the file at open.
struct VHDXBlockAllocationTable: Sendable {
    /// Raw entries (`geometry.totalEntries` of them).
    let entries: [UInt64]

    /// Decodes `bytes` (8 bytes per entry, little-endian) and checks each entry that matters:
    /// - payload entries of blocks inside the disk: a defined state (0-3, 6, 7), partially present only in a
    ///   differencing disk and only with its chunk's sector bitmap present; present blocks with zero reserved
    ///   bits, past the 1 MiB header section, ending within `fileSize` (the last block only up to the virtual
    ///   size), overlapping neither `reserved` (regions, log) nor each other;
    /// - in a differencing disk, sector bitmap entries: not present (0) or present (6), 1 MiB in the file
    ///   under the same rules. (Fixed and dynamic disks never use them; their values are ignored.)
    static func decode(_ bytes: [UInt8], geometry: VHDXBATGeometry, differencing: Bool, virtualSize: UInt64,
                              fileSize: UInt64, reserved: [Range<UInt64>], file: String? = nil) throws -> VHDXBlockAllocationTable {
        let entries = TableDecoding.uint64LittleEndian(bytes)
        guard UInt64(entries.count) >= geometry.totalEntries else {
            throw KDCTError.corrupt("BAT holds \(entries.count) entries, \(geometry.totalEntries) needed", file: file, field: "BAT")
        }
        var placements = Placements(fileSize: fileSize, reserved: reserved, file: file)
        let stride = geometry.chunkRatio + 1
        for index in 0..<Int(geometry.totalEntries) {
            let entry = VHDXBATEntry(raw: entries[index])
            if UInt64(index) % stride == geometry.chunkRatio {
                // Fixed and dynamic disks never use sector bitmap entries; their values are ignored.
                guard differencing else { continue }
                switch entry.state {
                case 0: continue
                case 6: try placements.place(index, entry, length: 1 << 20,
                                             what: "sector bitmap block of chunk \(UInt64(index) / stride)")
                default:
                    throw KDCTError.corrupt("sector bitmap entry has undefined state \(entry.state)", file: file, field: "BAT entry \(index)")
                }
                continue
            }
            let block = UInt64(index) - UInt64(index) / stride
            guard block < geometry.dataBlocks else { continue }
            try checkPayload(entry, index: index, block: block, entries: entries, geometry: geometry,
                             differencing: differencing, virtualSize: virtualSize, placements: &placements)
        }
        try placements.checkOverlaps()
        return VHDXBlockAllocationTable(entries: entries)
    }

    /// Checks payload entry `index` (block `block`): a defined state, partially present only in a differencing disk
    /// whose chunk's sector bitmap is present, and a stored block placed in the file.
    private static func checkPayload(_ entry: VHDXBATEntry, index: Int, block: UInt64, entries: [UInt64],
                                     geometry: VHDXBATGeometry, differencing: Bool, virtualSize: UInt64,
                                     placements: inout Placements) throws {
        let file = placements.file
        guard let state = VHDXPayloadState(rawValue: entry.state) else {
            throw KDCTError.corrupt("payload block \(block) has undefined state \(entry.state)", file: file, field: "BAT entry \(index)")
        }
        switch state {
        case .notPresent, .undefined, .zero, .unmapped:
            return
        case .partiallyPresent:
            guard differencing else {
                throw KDCTError.corrupt("payload block \(block) is partially present, a state only differencing disks may use",
                                        file: file, field: "BAT entry \(index)")
            }
            let bitmapEntry = VHDXBATEntry(raw: entries[geometry.bitmapIndex(chunk: block / geometry.chunkRatio)])
            guard bitmapEntry.state == 6 else {
                throw KDCTError.corrupt("payload block \(block) is partially present but its chunk's sector bitmap is not",
                                        file: file, field: "BAT entry \(index)")
            }
            fallthrough
        case .fullyPresent:
            let blockStart = block * geometry.blockSize
            let length = min(geometry.blockSize, virtualSize - blockStart)
            try placements.place(index, entry, length: length, what: "payload block \(block) (guest offset \(blockStart))")
        }
    }

    /// The file ranges the BAT places blocks at, each checked when placed and all against each other at the end.
    private struct Placements {
        let fileSize: UInt64
        let reserved: [Range<UInt64>]
        let file: String?
        private var placed: [(start: UInt64, end: UInt64, index: Int)] = []

        init(fileSize: UInt64, reserved: [Range<UInt64>], file: String?) {
            self.fileSize = fileSize
            self.reserved = reserved
            self.file = file
        }

        /// A block of `length` bytes placed by entry `index`: zero reserved bits, past the 1 MiB header section,
        /// inside the file, clear of the regions and the log.
        mutating func place(_ index: Int, _ entry: VHDXBATEntry, length: UInt64, what block: String) throws {
            let field = "BAT entry \(index)"
            let what = "\(block) (BAT entry \(index))"
            guard entry.reservedBits == 0 else {
                throw KDCTError.corrupt("\(what): reserved bits 0x\(String(entry.reservedBits, radix: 16)) are set", file: file, field: field)
            }
            let start = entry.fileOffset
            guard start >= 1 << 20 else {
                throw KDCTError.corrupt("\(what) at file offset \(start), inside the 1 MiB header section", file: file, field: field)
            }
            let (end, overflow) = start.addingReportingOverflow(length)
            guard !overflow, end <= fileSize else {
                throw KDCTError(.truncated, "\(what) at file offset \(start)..\(start &+ length) lies past the end of the file (\(fileSize) bytes)",
                                file: file, field: field)
            }
            if let clash = reserved.first(where: { $0.overlaps(start..<end) }) {
                throw KDCTError.corrupt("\(what) at file offset \(start)..\(end) overlaps metadata at \(clash.lowerBound)..\(clash.upperBound) (region or log)",
                                        file: file, field: field)
            }
            placed.append((start, end, index))
        }

        /// No two placed blocks overlap.
        mutating func checkOverlaps() throws {
            placed.sort { $0.start < $1.start }
            for i in placed.indices.dropFirst() where placed[i].start < placed[i - 1].end {
                throw KDCTError.corrupt("BAT entries \(placed[i - 1].index) and \(placed[i].index) place blocks that overlap at file offset \(placed[i].start)",
                                        file: file, field: "BAT entry \(placed[i].index)")
            }
        }
    }
}
