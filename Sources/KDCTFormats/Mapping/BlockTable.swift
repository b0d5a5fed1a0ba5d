/// What one entry of a block table (VDI block map, VHD and VHDX BATs) says about its block.
enum BlockEntry {
    /// Not in this layer.
    case absent
    /// Reads as zeros.
    case zero
    /// Stored in full; the block's first byte is at this file offset.
    case data(UInt64)
    /// Stored from this file offset for the sectors `presence` marks, absent for the others (VHD block bitmaps,
    /// VHDX partially present blocks).
    case partial(UInt64, BlockPresence)
}

/// The one-level lookup VDI, VHD and VHDX share: the guest is cut into blocks of `1 << blockShift` bytes, each
/// described by one table entry the format decodes into a `BlockEntry`; sector bitmaps split a block into runs.
struct BlockTable: Sendable {
    /// The file blocks are read from.
    let file: any HostFile
    /// log2 of the block size.
    let blockShift: UInt64
    /// Bytes per sector bitmap bit.
    let sectorBytes: UInt64
    /// Sector order in the bitmap bytes.
    let bitOrder: SectorBitmap.BitOrder

    /// Bytes per block.
    var blockBytes: UInt64 { 1 << blockShift }

    /// The run at guest `offset` (before `end`) inside its block, from `entry(block)`.
    @inline(__always)
    func mapping(at offset: UInt64, upTo end: UInt64, entry: (_ block: UInt64) throws -> BlockEntry) rethrows -> MappedRun {
        let block = offset >> blockShift
        let blockStart = block << blockShift
        let blockEnd = min(end, blockStart + blockBytes)
        let inBlock = offset - blockStart
        switch try entry(block) {
        case .absent:
            return .absent(blockEnd - offset)
        case .zero:
            return .zero(blockEnd - offset)
        case let .data(host):
            return .data(blockEnd - offset, file, host + inBlock)
        case let .partial(host, presence):
            switch presence {
            case .all:
                return .data(blockEnd - offset, file, host + inBlock)
            case .none:
                return .absent(blockEnd - offset)
            case let .some(bitmap):
                let sector = Int(inBlock / sectorBytes)
                let run = SectorBitmap.run(in: bitmap, from: sector, to: Int(blockBytes / sectorBytes), order: bitOrder)
                let runEnd = min(blockEnd, blockStart + UInt64(sector + run.count) * sectorBytes)
                return run.set ? .data(runEnd - offset, file, host + inBlock) : .absent(runEnd - offset)
            }
        }
    }
}

/// A guest stored byte for byte in a file (RAW, fixed VHD, VMDK FLAT extents): holes in the file, found with
/// SEEK_DATA/SEEK_HOLE, are zero runs, so a sparse file is walked in metadata time.
enum FlatFile {
    /// The run at guest `offset` (before `end`) of a guest whose byte 0 is byte `start` of `file`.
    static func mapping(_ file: ReadOnlyFile, start: UInt64, at offset: UInt64, upTo end: UInt64) throws -> MappedRun {
        let host = start + offset
        let limit = start + end
        guard let data = try file.nextData(from: host), data < limit else {
            return MappedRun(length: end - offset, mapping: .zero(HostLocation(file: file, offset: host)))
        }
        if data > host {
            return MappedRun(length: data - host, mapping: .zero(HostLocation(file: file, offset: host)))
        }
        let hole = try file.nextHole(from: host)
        return .data(max(min(hole, limit), host + 1) - host, file, host)
    }
}
