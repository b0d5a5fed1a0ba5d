import Foundation
@testable import KDCTFormats
import KDCTTestSupport

/// Writes VHDX files byte by byte for tests ([MS-VHDX] layout): qemu cannot make differencing VHDX, 4096-byte
/// logical sectors, logs to replay or broken structures.
///
/// Layout: identifier, headers at 64/128 KiB, region tables at 192/256 KiB, log at 1 MiB (1 MiB), metadata
/// region at 2 MiB (1 MiB), BAT at 3 MiB, then payload and sector bitmap blocks, each 1 MiB aligned.
struct VHDXTestBuilder {
    /// What one payload block holds.
    enum Block {
        case full([UInt8])
        /// Data for the whole block; only the logical sectors in `present` are marked in the sector bitmap.
        case partial([UInt8], present: [Range<Int>])
        case zero
        case unmapped
        case undefined
    }

    static let logOffset: UInt64 = 1 << 20
    static let metadataOffset: UInt64 = 2 << 20
    static let batOffset: UInt64 = 3 << 20

    var virtualSize: UInt64
    var blockSize: UInt32 = 1 << 20
    var logicalSectorSize: UInt32 = 512
    var physicalSectorSize: UInt32 = 4096
    var leaveBlocksAllocated = false
    /// Parent locator key/value pairs; non-nil makes a differencing disk.
    var parentLocator: [(String, String)]?
    var dataWriteGUID = VHDXGUID("11111111-2222-3333-4444-555555555555") ?? .zero
    var logGUID = VHDXGUID.zero
    var logLength: UInt32 = 1 << 20
    var blocks: [Int: Block] = [:]
    /// Raw log entries stored one after the other from the start of the log.
    var logEntries: [[UInt8]] = []
    /// BAT entries to store instead of the computed ones.
    var batOverride: [Int: UInt64] = [:]
    var creator = "KDCT test builder"

    var geometry: VHDXBATGeometry {
        VHDXBATGeometry(VHDXDiskParameters(blockSize: blockSize, leaveBlocksAllocated: leaveBlocksAllocated,
                                           hasParent: parentLocator != nil, virtualDiskSize: virtualSize,
                                           virtualDiskID: .zero, logicalSectorSize: logicalSectorSize,
                                           physicalSectorSize: physicalSectorSize))
    }

    var batRegionLength: UInt64 { max(1, (geometry.totalEntries * 8 + (1 << 20) - 1) >> 20) << 20 }

    /// A header with `sequence` (checksum set).
    func header(sequence: UInt64) -> [UInt8] {
        var w = ByteWriter(count: 4096)
        w.put(Array("head".utf8), at: 0)
        w.u64le(sequence, at: 8)
        w.put((VHDXGUID("aaaaaaaa-0000-0000-0000-000000000001") ?? .zero).bytes, at: 16)
        w.put(dataWriteGUID.bytes, at: 32)
        w.put(logGUID.bytes, at: 48)
        w.u16le(0, at: 64)
        w.u16le(1, at: 66)
        w.u32le(logLength, at: 68)
        w.u64le(Self.logOffset, at: 72)
        var bytes = w.bytes
        Self.setCRC(&bytes, at: 4)
        return bytes
    }

    /// Stores the CRC-32C of `bytes` (checksum field zeroed) at `offset`.
    static func setCRC(_ bytes: inout [UInt8], at offset: Int) {
        bytes.replaceSubrange(offset..<(offset + 4), with: [0, 0, 0, 0])
        let crc = VHDXChecksum.crc32c(bytes, checksumOffset: offset)
        bytes.replaceSubrange(offset..<(offset + 4), with: [UInt8(crc & 0xFF), UInt8(crc >> 8 & 0xFF),
                                                           UInt8(crc >> 16 & 0xFF), UInt8(crc >> 24)])
    }

    /// The region table (checksum set).
    func regionTable(entries: [(VHDXGUID, UInt64, UInt32, UInt32)]? = nil) -> [UInt8] {
        let list = entries ?? [(VHDXGUID.batRegion, Self.batOffset, UInt32(batRegionLength), 1),
                               (VHDXGUID.metadataRegion, Self.metadataOffset, 1 << 20, 1)]
        var w = ByteWriter(count: VHDXRegionTable.size)
        w.put(Array("regi".utf8), at: 0)
        w.u32le(UInt32(list.count), at: 8)
        for (index, entry) in list.enumerated() where 16 + index * 32 + 32 <= VHDXRegionTable.size {
            let base = 16 + index * 32
            w.put(entry.0.bytes, at: base)
            w.u64le(entry.1, at: base + 16)
            w.u32le(entry.2, at: base + 24)
            w.u32le(entry.3, at: base + 28)
        }
        var bytes = w.bytes
        Self.setCRC(&bytes, at: 4)
        return bytes
    }

    /// The metadata region's first bytes: table then items.
    func metadata() -> [UInt8] {
        var items: [(VHDXGUID, [UInt8], UInt32)] = []
        var parameters = ByteWriter(count: 8)
        parameters.u32le(blockSize, at: 0)
        parameters.u32le((leaveBlocksAllocated ? 1 : 0) | (parentLocator != nil ? 2 : 0), at: 4)
        items.append((.fileParameters, parameters.bytes, 4))
        var size = ByteWriter(count: 8)
        size.u64le(virtualSize, at: 0)
        items.append((.virtualDiskSize, size.bytes, 6))
        items.append((.virtualDiskID, (VHDXGUID("bbbbbbbb-0000-0000-0000-000000000002") ?? .zero).bytes, 6))
        var logical = ByteWriter(count: 4)
        logical.u32le(logicalSectorSize, at: 0)
        items.append((.logicalSectorSize, logical.bytes, 6))
        var physical = ByteWriter(count: 4)
        physical.u32le(physicalSectorSize, at: 0)
        items.append((.physicalSectorSize, physical.bytes, 6))
        if let parentLocator { items.append((.parentLocator, Self.parentLocatorItem(parentLocator), 4)) }

        var region = [UInt8](repeating: 0, count: 128 << 10)
        var w = ByteWriter(count: 32)
        w.put(Array("metadata".utf8), at: 0)
        w.u16le(UInt16(items.count), at: 10)
        region.replaceSubrange(0..<32, with: w.bytes)
        var offset = 64 << 10
        for (index, (id, bytes, flags)) in items.enumerated() {
            var entry = ByteWriter(count: 32)
            entry.put(id.bytes, at: 0)
            entry.u32le(UInt32(offset), at: 16)
            entry.u32le(UInt32(bytes.count), at: 20)
            entry.u32le(flags, at: 24)
            region.replaceSubrange((32 + index * 32)..<(64 + index * 32), with: entry.bytes)
            region.replaceSubrange(offset..<(offset + bytes.count), with: bytes)
            offset += (bytes.count + 7) / 8 * 8
        }
        return region
    }

    /// A parent locator item of the VHDX type holding `pairs`.
    static func parentLocatorItem(_ pairs: [(String, String)]) -> [UInt8] {
        var header = ByteWriter(count: 20 + pairs.count * 12)
        header.put(VHDXGUID.vhdxParentLocatorType.bytes, at: 0)
        header.u16le(UInt16(pairs.count), at: 18)
        var strings: [UInt8] = []
        var offset = 20 + pairs.count * 12
        for (index, (key, value)) in pairs.enumerated() {
            let k = VHDTestBuilder.utf16le(key), v = VHDTestBuilder.utf16le(value)
            header.u32le(UInt32(offset), at: 20 + index * 12)
            header.u32le(UInt32(offset + k.count), at: 24 + index * 12)
            header.u16le(UInt16(k.count), at: 28 + index * 12)
            header.u16le(UInt16(v.count), at: 30 + index * 12)
            strings += k + v
            offset += k.count + v.count
        }
        return header.bytes + strings
    }

    /// The whole file.
    func build() -> [UInt8] {
        let geometry = self.geometry
        let mib: UInt64 = 1 << 20
        var chunks: [(UInt64, [UInt8])] = []
        var id = ByteWriter(count: 520)
        id.put(Array("vhdxfile".utf8), at: 0)
        id.put(VHDTestBuilder.utf16le(creator), at: 8)
        chunks.append((0, id.bytes))
        chunks.append((64 << 10, header(sequence: 1)))
        chunks.append((128 << 10, header(sequence: 2)))
        chunks.append((192 << 10, regionTable()))
        chunks.append((256 << 10, regionTable()))
        var logPosition = Self.logOffset
        for entry in logEntries {
            chunks.append((logPosition, entry))
            logPosition += UInt64(entry.count)
        }
        chunks.append((Self.metadataOffset, metadata()))

        var bat = [UInt64](repeating: 0, count: Int(geometry.totalEntries))
        var next = Self.batOffset + batRegionLength
        var bitmaps: [UInt64: [UInt8]] = [:]
        for (index, block) in blocks.sorted(by: { $0.key < $1.key }) {
            let entryIndex = geometry.payloadIndex(UInt64(index))
            switch block {
            case .zero: bat[entryIndex] = 2
            case .unmapped: bat[entryIndex] = 3
            case .undefined: bat[entryIndex] = 1
            case let .full(data):
                bat[entryIndex] = next | 6
                chunks.append((next, data))
                next += (UInt64(blockSize) + mib - 1) / mib * mib
            case let .partial(data, present):
                bat[entryIndex] = next | 7
                chunks.append((next, data))
                next += (UInt64(blockSize) + mib - 1) / mib * mib
                let chunk = UInt64(index) / geometry.chunkRatio
                var bitmap = bitmaps[chunk] ?? [UInt8](repeating: 0, count: 1 << 20)
                let first = Int((UInt64(index) % geometry.chunkRatio) * geometry.sectorsPerBlock)
                for range in present {
                    for sector in range { bitmap[(first + sector) / 8] |= 1 << UInt8((first + sector) % 8) }
                }
                bitmaps[chunk] = bitmap
            }
        }
        for (chunk, bitmap) in bitmaps.sorted(by: { $0.key < $1.key }) {
            bat[geometry.bitmapIndex(chunk: chunk)] = next | 6
            chunks.append((next, bitmap))
            next += mib
        }
        for (index, value) in batOverride { bat[index] = value }
        chunks.append((Self.batOffset, bat.flatMap { value in (0..<8).map { UInt8(truncatingIfNeeded: value >> ($0 * 8)) } }))

        var file = [UInt8](repeating: 0, count: Int(next))
        for (offset, bytes) in chunks {
            file.replaceSubrange(Int(offset)..<(Int(offset) + bytes.count), with: bytes)
        }
        return file
    }

    @discardableResult
    func write(to path: String) throws -> String {
        try Data(build()).write(to: URL(fileURLWithPath: path))
        return path
    }

    /// The guest content this builder describes over `parent` (zeros when nil): the bytes a reader must return.
    func expectedContent(over parent: [UInt8]? = nil) -> [UInt8] {
        var bytes = parent ?? [UInt8](repeating: 0, count: Int(virtualSize))
        let size = Int(blockSize), sector = Int(logicalSectorSize)
        for (index, block) in blocks {
            let start = index * size
            let end = min(start + size, Int(virtualSize))
            switch block {
            case let .full(data): bytes.replaceSubrange(start..<end, with: data[0..<(end - start)])
            case .zero, .unmapped: bytes.replaceSubrange(start..<end, with: [UInt8](repeating: 0, count: end - start))
            case .undefined: if parent == nil { bytes.replaceSubrange(start..<end, with: [UInt8](repeating: 0, count: end - start)) }
            case let .partial(data, present):
                for range in present {
                    for s in range where start + s * sector < end {
                        bytes.replaceSubrange((start + s * sector)..<(start + (s + 1) * sector),
                                              with: data[(s * sector)..<((s + 1) * sector)])
                    }
                }
            }
        }
        return bytes
    }

    /// One log entry ([MS-VHDX] 2.3.1) writing `writes` (data writes are 4096 bytes), checksum set.
    static func logEntry(sequence: UInt64, tail: UInt32, logGUID: VHDXGUID, flushed: UInt64, last: UInt64,
                         writes: [VHDXLogWrite]) -> [UInt8] {
        let descriptorSectors = (writes.count + 2 + 127) / 128
        let dataCount = writes.filter { if case .data = $0 { return true } else { return false } }.count
        let length = (descriptorSectors + dataCount) * 4096
        var w = ByteWriter(count: length)
        w.put(Array("loge".utf8), at: 0)
        w.u32le(UInt32(length), at: 8)
        w.u32le(tail, at: 12)
        w.u64le(sequence, at: 16)
        w.u32le(UInt32(writes.count), at: 24)
        w.put(logGUID.bytes, at: 32)
        w.u64le(flushed, at: 48)
        w.u64le(last, at: 56)
        var dataSector = descriptorSectors
        for (index, write) in writes.enumerated() {
            let base = 64 + index * 32
            switch write {
            case let .zero(offset, zeroLength):
                w.put(Array("zero".utf8), at: base)
                w.u64le(zeroLength, at: base + 8)
                w.u64le(offset, at: base + 16)
            case let .data(offset, bytes):
                w.put(Array("desc".utf8), at: base)
                w.put(Array(bytes[4092..<4096]), at: base + 4)
                w.put(Array(bytes[0..<8]), at: base + 8)
                w.u64le(offset, at: base + 16)
                let sector = dataSector * 4096
                w.put(Array("data".utf8), at: sector)
                w.u32le(UInt32(sequence >> 32), at: sector + 4)
                w.put(Array(bytes[8..<4092]), at: sector + 8)
                w.u32le(UInt32(sequence & 0xFFFF_FFFF), at: sector + 4092)
                dataSector += 1
            }
            w.u64le(sequence, at: base + 24)
        }
        var bytes = w.bytes
        setCRC(&bytes, at: 4)
        return bytes
    }

    /// The file offset of payload block `index` as `build()` places it (full and partial blocks in index order).
    func payloadOffset(of index: Int) -> UInt64? {
        var next = Self.batOffset + batRegionLength
        let step = ((UInt64(blockSize) + (1 << 20) - 1) >> 20) << 20
        for (i, block) in blocks.sorted(by: { $0.key < $1.key }) {
            switch block {
            case .full, .partial:
                if i == index { return next }
                next += step
            default: continue
            }
        }
        return nil
    }
}

/// Edits a built VHDX in memory: little-endian fields, CRCs restored.
extension Array where Element == UInt8 {
    mutating func vhdxPutLE(_ value: UInt64, at offset: Int, size: Int) {
        for i in 0..<size { self[offset + i] = UInt8(truncatingIfNeeded: value >> (i * 8)) }
    }

    /// Applies `edit` to header `index` (0 or 1) and restores its CRC.
    mutating func editVHDXHeader(_ index: Int, _ edit: (inout [UInt8]) -> Void) {
        let start = (index + 1) * (64 << 10)
        var header = Array(self[start..<(start + 4096)])
        edit(&header)
        VHDXTestBuilder.setCRC(&header, at: 4)
        replaceSubrange(start..<(start + 4096), with: header)
    }
}
