/// The VDI block map: one little-endian 32-bit entry per block of the disk (VDICore.h, VDIIMAGEBLOCKPOINTER).
///
/// An entry is the index of the block's slot in the data area, or one of two markers:
/// - `0xFFFFFFFF` (VDI_IMAGE_BLOCK_FREE): not allocated in this image. In a base image it reads as zeros; in a
///   differencing image it comes from the parent. Reported as `.absent`.
/// - `0xFFFFFFFE` (VDI_IMAGE_BLOCK_ZERO): reads as zeros, also in a differencing image (discarded blocks).
///   Reported as `.zero`.
///
/// Slot `n` starts at `dataOffset + n * (blockExtra + blockSize)`; its guest data follows `blockExtra` bytes of
/// service data (VDIIMAGEDESC.offStartBlockData).
struct VDIBlockMap: Sendable {
    /// Entry of a block that is not allocated in this image.
    static let free: UInt32 = 0xFFFF_FFFF
    /// Entry of a block that reads as zeros.
    static let zero: UInt32 = 0xFFFF_FFFE

    /// What one block map entry says about its block.
    enum Block: Sendable, Equatable {
        /// Not in this image (`.absent`).
        case free
        /// Reads as zeros (`.zero`).
        case zero
        /// Guest data at this file offset.
        case data(hostOffset: UInt64)
    }

    /// The decoded entries.
    let entries: [UInt32]
    /// Geometry taken from the header.
    let dataOffset: UInt64
    let blockExtra: UInt64
    let stride: UInt64

    /// Decodes `bytes` (the map as stored, `4 * header.blockCount` bytes) for an image with `header`.
    init(bytes: [UInt8], header: VDIHeader) {
        entries = TableDecoding.uint32LittleEndian(bytes)
        dataOffset = header.dataOffset
        blockExtra = UInt64(header.blockExtra)
        stride = header.blockStride
    }

    /// File offset of the guest data of slot `slot`. Cannot overflow: slot < 2^32, stride < 2^33, offsets < 2^32.
    @inline(__always)
    func hostOffset(ofSlot slot: UInt32) -> UInt64 {
        dataOffset + UInt64(slot) * stride + blockExtra
    }

    /// The state of block `index` (which must be below `entries.count`).
    @inline(__always)
    func block(_ index: Int) -> Block {
        let entry = entries[index]
        switch entry {
        case VDIBlockMap.free: return .free
        case VDIBlockMap.zero: return .zero
        default: return .data(hostOffset: hostOffset(ofSlot: entry))
        }
    }

    /// Checks that every allocated block inside the disk has its guest bytes inside the file: the part of block
    /// `i` below `virtualSize` must end at or before `fileSize`. Throws `corrupt` naming the first bad entry.
    func validate(virtualSize: UInt64, blockSize: UInt64, fileSize: UInt64) throws {
        let blocksInDisk = Int(min(UInt64(entries.count), (virtualSize + blockSize - 1) / blockSize))
        for index in 0..<blocksInDisk {
            let entry = entries[index]
            if entry >= VDIBlockMap.zero { continue }
            let start = hostOffset(ofSlot: entry)
            let guestStart = UInt64(index) * blockSize
            let needed = min(blockSize, virtualSize - guestStart)
            if start > fileSize || needed > fileSize - start {
                throw KDCTError.corrupt(
                    "block map entry \(index) (guest offset \(guestStart)) points to block slot \(entry) at file offset \(start), past the end of the file (\(fileSize) bytes)",
                    field: "block map entry \(index)")
            }
        }
    }
}
