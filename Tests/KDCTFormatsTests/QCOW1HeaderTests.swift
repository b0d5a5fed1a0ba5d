import Foundation
import Testing
@testable import KDCTFormats
import KDCTTestSupport

/// QCOW version 1 header and L2 entry decoding from bytes, valid and hostile.
@Suite struct QCOW1HeaderTests {
    /// A header as qemu writes it, with fields overridable.
    static func headerBytes(size: UInt64 = 4 << 20, clusterBits: UInt8 = 12, l2Bits: UInt8 = 9, crypt: UInt32 = 0,
                            l1Offset: UInt64 = 48, backingOffset: UInt64 = 0, backingSize: UInt32 = 0,
                            version: UInt32 = 1) -> [UInt8] {
        var w = ByteWriter(count: 48)
        w.u32be(QCOWHeader.magic, at: 0)
        w.u32be(version, at: 4)
        w.u64be(backingOffset, at: 8)
        w.u32be(backingSize, at: 16)
        w.u32be(1_700_000_000, at: 20)
        w.u64be(size, at: 24)
        w.u8(clusterBits, at: 32)
        w.u8(l2Bits, at: 33)
        w.u32be(crypt, at: 36)
        w.u64be(l1Offset, at: 40)
        return w.bytes
    }

    @Test func decodesQemuHeader() throws {
        let header = try QCOWHeader.decode(Self.headerBytes(size: (4 << 20) + 100))
        #expect(header.clusterBits == 12 && header.l2Bits == 9)
        #expect(header.clusterSize == 4096)
        #expect(header.l2Entries == 512)
        #expect(header.bytesPerL2 == 2 << 20)
        #expect(header.l1Entries == 3)
        #expect(header.virtualSize == 4 << 20)
        #expect(header.mtime == 1_700_000_000)
        try header.validate(fileSize: 4096, limits: ImageLimits())
    }

    @Test func refusesOtherVersionsAndMissingMagic() throws {
        let v2 = try #require(throws: KDCTError.self) { try QCOWHeader.decode(Self.headerBytes(version: 2)) }
        #expect(v2.code == .unsupported)
        var bytes = Self.headerBytes()
        bytes[3] = 0
        #expect(throws: KDCTError.self) { try QCOWHeader.decode(bytes) }
        let short = try #require(throws: KDCTError.self) { try QCOWHeader.decode(Array(Self.headerBytes().prefix(40))) }
        #expect(short.code == .truncated)
    }

    private func validationError(_ bytes: [UInt8], fileSize: UInt64 = 1 << 20,
                                 limits: ImageLimits = ImageLimits()) throws -> KDCTError {
        let header = try QCOWHeader.decode(bytes)
        return try #require(throws: KDCTError.self) { try header.validate(fileSize: fileSize, limits: limits) }
    }

    @Test(arguments: [UInt8(0), 8, 17, 21, 63, 255])
    func refusesClusterBitsOutOfRange(_ bits: UInt8) throws {
        let error = try validationError(Self.headerBytes(clusterBits: bits))
        #expect(error.code == .corrupt)
        #expect(error.field == "cluster_bits")
        #expect(error.message.contains("\(bits)"))
        // Derived sizes of an out-of-range header never trap.
        let header = try QCOWHeader.decode(Self.headerBytes(clusterBits: bits, l2Bits: 255))
        _ = (header.l1Entries, header.clusterSize, header.bytesPerL2)
    }

    @Test(arguments: [UInt8(0), 5, 14, 40, 255])
    func refusesL2BitsOutOfRange(_ bits: UInt8) throws {
        let error = try validationError(Self.headerBytes(l2Bits: bits))
        #expect(error.code == .corrupt)
        #expect(error.field == "l2_bits")
        #expect(error.message.contains("\(bits)"))
    }

    @Test func acceptsTheWholeQemuRange() throws {
        for clusterBits in QCOWHeader.clusterBitsRange {
            for l2Bits in QCOWHeader.l2BitsRange {
                let header = try QCOWHeader.decode(Self.headerBytes(size: 1 << 30, clusterBits: clusterBits, l2Bits: l2Bits))
                try header.validate(fileSize: 64 << 20, limits: ImageLimits())
            }
        }
    }

    @Test func refusesEncryptedImagesClearly() throws {
        let aes = try validationError(Self.headerBytes(crypt: 1))
        #expect(aes.code == .unsupported)
        #expect(aes.message.contains("encrypted"))
        let other = try validationError(Self.headerBytes(crypt: 7))
        #expect(other.code == .corrupt)
        #expect(other.field == "crypt_method")
    }

    @Test func refusesHostileSizesWithBoundedMemory() throws {
        #expect(try validationError(Self.headerBytes(size: 1)).field == "size")
        #expect(try validationError(Self.headerBytes(size: .max)).code == .limitExceeded)
        // 64 TiB with the smallest clusters and L2 tables needs a 16 GiB L1 table: refused before allocating.
        let huge = try validationError(Self.headerBytes(size: 64 << 40, clusterBits: 9, l2Bits: 6))
        #expect(huge.code == .limitExceeded)
        #expect(huge.message.contains("L1 table"))
        #expect(try validationError(Self.headerBytes(l1Offset: 50)).field == "l1_table_offset")
        #expect(try validationError(Self.headerBytes(l1Offset: 1 << 20)).code == .truncated)
        #expect(try validationError(Self.headerBytes(l1Offset: .max - 7)).code == .truncated)
        #expect(try validationError(Self.headerBytes(backingOffset: 48, backingSize: 5000)).field == "backing_file_size")
        #expect(try validationError(Self.headerBytes(backingOffset: .max, backingSize: 10)).code == .truncated)
    }

    @Test func decodesL2Entries() {
        #expect(QCOWClusterEntry(raw: 0, clusterBits: 12) == .unallocated)
        #expect(QCOWClusterEntry(raw: 0x12_3000, clusterBits: 12) == .data(offset: 0x12_3000))
        // Compressed: bit 63, then the size in the 12 bits below bit 63 (bits 51...62), then the offset.
        let raw: UInt64 = 1 << 63 | 1234 << 51 | 0x7_6543
        #expect(QCOWClusterEntry(raw: raw, clusterBits: 12) == .compressed(offset: 0x7_6543, size: 1234))
        let small: UInt64 = 1 << 63 | 300 << 54 | 0x1_0001
        #expect(QCOWClusterEntry(raw: small, clusterBits: 9) == .compressed(offset: 0x1_0001, size: 300))
    }
}
