import Foundation
@testable import KDCTFormats
import KDCTTestSupport

/// Writes VDI files the way VirtualBox lays them out, so tests can make what qemu-img cannot: differencing images
/// (snapshots), block_extra, version 0.2 headers, odd block sizes and hostile headers.
struct SyntheticVDI {
    /// What one block of the map holds.
    enum Block {
        case data([UInt8])
        case zero
    }

    var fileInfo = "<<< Oracle VM VirtualBox Disk Image >>>\n"
    var version: UInt32 = 0x0001_0001
    var headerSize: UInt32 = 0x190
    var imageType: UInt32 = 1
    var flags: UInt32 = 0
    var comment = ""
    var diskSize: UInt64
    var blockSize: UInt32 = 1 << 20
    var blockExtra: UInt32 = 0
    /// Block map entries; nil means `diskSize / blockSize` rounded up.
    var blockCount: UInt32?
    var blocksAllocatedOverride: UInt32?
    var creation = SyntheticVDI.uuid(1)
    var modification = SyntheticVDI.uuid(2)
    var link = [UInt8](repeating: 0, count: 16)
    var parentModification = [UInt8](repeating: 0, count: 16)
    /// Blocks that are not free, by index.
    var blocks: [Int: Block] = [:]
    /// Overrides of raw map entries, applied after the blocks are laid out (hostile images).
    var rawEntries: [Int: UInt32] = [:]

    init(diskSize: UInt64, blockSize: UInt32 = 1 << 20) {
        self.diskSize = diskSize
        self.blockSize = blockSize
    }

    /// A deterministic UUID derived from `seed`.
    static func uuid(_ seed: UInt8) -> [UInt8] { (0..<16).map { UInt8(truncatingIfNeeded: Int(seed) &* 31 &+ $0 &* 7 &+ 1) } }

    var count: Int { Int(blockCount ?? UInt32((diskSize + UInt64(blockSize) - 1) / UInt64(blockSize))) }
    var blocksOffset: Int { version >> 16 == 0 ? 0x1A4 : 0x200 }
    var dataOffset: Int {
        let end = blocksOffset + 4 * count
        return version >> 16 == 0 ? end : (end + 511) / 512 * 512
    }

    /// The first 512 bytes of the file.
    func headerBytes() -> [UInt8] {
        var w = ByteWriter(count: 512)
        w.put(Array(fileInfo.utf8.prefix(64)), at: 0)
        w.u32le(0xBEDA_107F, at: 0x40)
        w.u32le(version, at: 0x44)
        let allocated = blocksAllocatedOverride ?? UInt32(blocks.values.filter { if case .data = $0 { true } else { false } }.count)
        if version >> 16 == 0 {
            w.u32le(imageType, at: 0x48)
            w.u32le(flags, at: 0x4C)
            w.put(Array(comment.utf8.prefix(255)), at: 0x50)
            w.u32le(512, at: 0x15C)
            w.u64le(diskSize, at: 0x160)
            w.u32le(blockSize, at: 0x168)
            w.u32le(UInt32(count), at: 0x16C)
            w.u32le(allocated, at: 0x170)
            w.put(creation, at: 0x174)
            w.put(modification, at: 0x184)
            w.put(link, at: 0x194)
        } else {
            w.u32le(headerSize, at: 0x48)
            w.u32le(imageType, at: 0x4C)
            w.u32le(flags, at: 0x50)
            w.put(Array(comment.utf8.prefix(255)), at: 0x54)
            w.u32le(UInt32(blocksOffset), at: 0x154)
            w.u32le(UInt32(truncatingIfNeeded: dataOffset), at: 0x158)
            w.u32le(512, at: 0x168)
            w.u64le(diskSize, at: 0x170)
            w.u32le(blockSize, at: 0x178)
            w.u32le(blockExtra, at: 0x17C)
            w.u32le(UInt32(count), at: 0x180)
            w.u32le(allocated, at: 0x184)
            w.put(creation, at: 0x188)
            w.put(modification, at: 0x198)
            w.put(link, at: 0x1A8)
            w.put(parentModification, at: 0x1B8)
            w.u32le(512, at: 0x1D4)
        }
        return w.bytes
    }

    /// Writes the image. Data blocks get slots in reverse index order (so the map is not the identity) and the
    /// block_extra bytes before each block's data are filled with 0xEE (they must never be read as guest data).
    func write(to path: String) throws {
        var file = Data(headerBytes())
        file.append(Data(count: max(0, dataOffset - file.count)))
        var entries = [UInt32](repeating: 0xFFFF_FFFF, count: count)
        var slot: UInt32 = 0
        let stride = Int(blockSize) + Int(blockExtra)
        for index in blocks.keys.sorted(by: >) {
            guard let block = blocks[index] else { continue }
            switch block {
            case .zero:
                entries[index] = 0xFFFF_FFFE
            case let .data(bytes):
                entries[index] = slot
                let start = dataOffset + Int(slot) * stride
                if file.count < start + stride { file.append(Data(count: start + stride - file.count)) }
                file.replaceSubrange(start..<(start + Int(blockExtra)), with: [UInt8](repeating: 0xEE, count: Int(blockExtra)))
                var padded = bytes
                padded += [UInt8](repeating: 0, count: Int(blockSize) - padded.count)
                file.replaceSubrange((start + Int(blockExtra))..<(start + stride), with: padded)
                slot += 1
            }
        }
        for (index, value) in rawEntries { entries[index] = value }
        var map = ByteWriter(count: 4 * count)
        for (i, entry) in entries.enumerated() { map.u32le(entry, at: 4 * i) }
        file.replaceSubrange(blocksOffset..<(blocksOffset + 4 * count), with: map.bytes)
        guard FileManager.default.createFile(atPath: path, contents: file) else {
            throw KDCTError(.io, "cannot write \(path)")
        }
    }

    /// Applies this layer's blocks onto `guest` (a flattened disk being built): data overwrites, zero clears,
    /// free leaves what is below.
    func apply(to guest: inout [UInt8]) {
        for (index, block) in blocks {
            let start = index * Int(blockSize)
            guard start < guest.count else { continue }
            let end = min(guest.count, start + Int(blockSize))
            switch block {
            case .zero:
                guest.replaceSubrange(start..<end, with: [UInt8](repeating: 0, count: end - start))
            case let .data(bytes):
                var padded = bytes
                padded += [UInt8](repeating: 0, count: Int(blockSize) - padded.count)
                guest.replaceSubrange(start..<end, with: padded[0..<(end - start)])
            }
        }
    }
}

/// Writes `bytes` to a new file at `path`, failing the test when it cannot.
func writeTestFile(_ bytes: [UInt8], to path: String) throws {
    guard FileManager.default.createFile(atPath: path, contents: Data(bytes)) else {
        throw KDCTError(.io, "cannot write \(path)")
    }
}
