import Foundation
@testable import KDCTFormats
import KDCTTestSupport

/// Writes VHD files byte by byte for tests: qemu cannot make differencing VHDs, partial block bitmaps or broken
/// headers, so the tests build them here, following the specification's layout.
struct VHDTestBuilder {
    /// One allocated block: its bitmap (one bit per sector, most significant bit first) and its data.
    struct Block {
        var bitmap: [UInt8]
        var data: [UInt8]
    }

    /// A parent locator entry to store.
    struct Locator {
        var code: String
        var data: [UInt8]
    }

    var virtualSize: UInt64
    var blockSize: UInt32 = 2 << 20
    var creator = "win "
    var diskType: UInt32 = 3
    var cylinders: UInt16 = 0xFFFF
    var heads: UInt8 = 16
    var sectorsPerTrack: UInt8 = 255
    var uniqueID: [UInt8] = Array(0..<16)
    var timestamp: UInt32 = 0x2000_0000
    var blocks: [Int: Block] = [:]
    var parentUniqueID = [UInt8](repeating: 0, count: 16)
    var parentTimestamp: UInt32 = 0
    var parentName = ""
    var locators: [Locator] = []
    /// BAT entries to store instead of the computed ones (hostile tests).
    var batOverride: [Int: UInt32] = [:]
    /// Max table entries to store instead of the computed count.
    var maxTableEntriesOverride: UInt32?

    /// The footer for this disk (checksum computed).
    func footer(dataOffset: UInt64) -> [UInt8] {
        var w = ByteWriter(count: 512)
        w.put(Array("conectix".utf8), at: 0)
        w.u32be(2, at: 8)
        w.u32be(0x0001_0000, at: 12)
        w.u64be(dataOffset, at: 16)
        w.u32be(timestamp, at: 24)
        w.put(Array(creator.utf8.prefix(4)), at: 28)
        w.u32be(0x000A_0000, at: 32)
        w.put(Array("Wi2k".utf8), at: 36)
        w.u64be(virtualSize, at: 40)
        w.u64be(virtualSize, at: 48)
        w.u16be(cylinders, at: 56)
        w.u8(heads, at: 58)
        w.u8(sectorsPerTrack, at: 59)
        w.u32be(diskType, at: 60)
        w.put(uniqueID, at: 68)
        var bytes = w.bytes
        Self.setChecksum(&bytes, at: 64)
        return bytes
    }

    /// Stores the VHD checksum of `bytes` at `offset`.
    static func setChecksum(_ bytes: inout [UInt8], at offset: Int) {
        bytes.replaceSubrange(offset..<(offset + 4), with: [0, 0, 0, 0])
        let sum = bytes.reduce(UInt32(0)) { $0 &+ UInt32($1) }
        let value = ~sum
        bytes.replaceSubrange(offset..<(offset + 4), with: [UInt8(value >> 24), UInt8(value >> 16 & 0xFF),
                                                           UInt8(value >> 8 & 0xFF), UInt8(value & 0xFF)])
    }

    var blockCount: Int { Int((virtualSize + UInt64(blockSize) - 1) / UInt64(blockSize)) }
    var bitmapSize: Int { Int(VHDDynamicHeader.bitmapSize(blockSize: blockSize)) }

    /// The whole file: footer copy, dynamic header, parent locator data, BAT, blocks, footer.
    func build() -> [UInt8] {
        if diskType == 2 {
            var data = [UInt8](repeating: 0, count: Int(virtualSize))
            for (index, block) in blocks {
                let start = index * Int(blockSize)
                let count = min(block.data.count, data.count - start)
                data.replaceSubrange(start..<(start + count), with: block.data.prefix(count))
            }
            return data + footer(dataOffset: .max)
        }
        let headerOffset = 512
        var locatorOffset = headerOffset + 1024
        var locatorEntries: [(Locator, Int)] = []
        for locator in locators {
            locatorEntries.append((locator, locatorOffset))
            locatorOffset += (locator.data.count + 511) / 512 * 512
        }
        let tableOffset = locatorOffset
        let entries = Int(maxTableEntriesOverride ?? UInt32(blockCount))
        let tableBytes = (min(entries, blockCount) * 4 + 511) / 512 * 512
        var next = tableOffset + tableBytes
        var bat = [UInt32](repeating: 0xFFFF_FFFF, count: blockCount)
        var placed: [(Int, Block)] = []
        for (index, block) in blocks.sorted(by: { $0.key < $1.key }) {
            bat[index] = UInt32(next / 512)
            placed.append((next, block))
            next += bitmapSize + Int(blockSize)
        }
        for (index, value) in batOverride { bat[index] = value }

        var header = ByteWriter(count: 1024)
        header.put(Array("cxsparse".utf8), at: 0)
        header.u64be(.max, at: 8)
        header.u64be(UInt64(tableOffset), at: 16)
        header.u32be(0x0001_0000, at: 24)
        header.u32be(UInt32(entries), at: 28)
        header.u32be(blockSize, at: 32)
        header.put(parentUniqueID, at: 40)
        header.u32be(parentTimestamp, at: 56)
        var nameBytes: [UInt8] = []
        for unit in parentName.utf16.prefix(255) { nameBytes += [UInt8(unit >> 8), UInt8(unit & 0xFF)] }
        header.put(nameBytes, at: 64)
        for (index, (locator, offset)) in locatorEntries.enumerated() {
            let base = 576 + index * 24
            header.put(Array(locator.code.utf8.prefix(4)), at: base)
            header.u32be(UInt32((locator.data.count + 511) / 512 * 512), at: base + 4)
            header.u32be(UInt32(locator.data.count), at: base + 8)
            header.u64be(UInt64(offset), at: base + 16)
        }
        var headerBytes = header.bytes
        Self.setChecksum(&headerBytes, at: 36)

        var file = [UInt8](repeating: 0, count: next + 512)
        let foot = footer(dataOffset: UInt64(headerOffset))
        file.replaceSubrange(0..<512, with: foot)
        file.replaceSubrange(headerOffset..<(headerOffset + 1024), with: headerBytes)
        for (locator, offset) in locatorEntries {
            file.replaceSubrange(offset..<(offset + locator.data.count), with: locator.data)
        }
        for (index, value) in bat.enumerated() {
            let o = tableOffset + index * 4
            file.replaceSubrange(o..<(o + 4), with: [UInt8(value >> 24), UInt8(value >> 16 & 0xFF),
                                                     UInt8(value >> 8 & 0xFF), UInt8(value & 0xFF)])
        }
        for (offset, block) in placed {
            file.replaceSubrange(offset..<(offset + block.bitmap.count), with: block.bitmap)
            let dataStart = offset + bitmapSize
            file.replaceSubrange(dataStart..<(dataStart + block.data.count), with: block.data)
        }
        file.replaceSubrange(next..<(next + 512), with: foot)
        return file
    }

    /// Writes the file to `path`.
    @discardableResult
    func write(to path: String) throws -> String {
        try Data(build()).write(to: URL(fileURLWithPath: path))
        return path
    }

    /// A UTF-16LE locator payload.
    static func utf16le(_ text: String) -> [UInt8] {
        text.utf16.flatMap { [UInt8($0 & 0xFF), UInt8($0 >> 8)] }
    }

    /// A bitmap of `sectors` bits (MSB first) with the sectors in `present` set.
    static func bitmap(sectors: Int, present: [Range<Int>]) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: (sectors / 8 + 511) / 512 * 512)
        for range in present {
            for sector in range { bytes[sector / 8] |= 0x80 >> UInt8(sector % 8) }
        }
        return bytes
    }

    /// Deterministic non-zero bytes.
    static func noise(_ count: Int, seed: UInt64) -> [UInt8] {
        TestPattern.bytes(offset: seed, length: count, kind: "r").map { $0 | 1 }
    }
}
