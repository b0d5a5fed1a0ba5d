import Foundation
import Testing
@testable import KDCTFormats
import KDCTTestSupport

/// QED header and L2 entry decoding from bytes, valid and hostile.
@Suite struct QEDHeaderTests {
    /// A header as qemu writes it (one header cluster, L1 table right after), with fields overridable.
    static func headerBytes(clusterSize: UInt32 = 65536, tableSize: UInt32 = 4, headerSize: UInt32 = 1,
                            features: UInt64 = 0, compat: UInt64 = 0, autoclear: UInt64 = 0,
                            l1Offset: UInt64? = nil, imageSize: UInt64 = 8 << 20,
                            backingOffset: UInt32 = 0, backingSize: UInt32 = 0) -> [UInt8] {
        var w = ByteWriter(count: 64)
        w.put(Array("QED".utf8) + [0], at: 0)
        w.u32le(clusterSize, at: 4)
        w.u32le(tableSize, at: 8)
        w.u32le(headerSize, at: 12)
        w.u64le(features, at: 16)
        w.u64le(compat, at: 24)
        w.u64le(autoclear, at: 32)
        w.u64le(l1Offset ?? UInt64(clusterSize), at: 40)
        w.u64le(imageSize, at: 48)
        w.u32le(backingOffset, at: 56)
        w.u32le(backingSize, at: 60)
        return w.bytes
    }

    @Test func decodesQemuHeader() throws {
        let header = try QEDHeader.decode(Self.headerBytes(features: 5, backingOffset: 64, backingSize: 8))
        #expect(header.clusterSize == 65536 && header.tableSize == 4 && header.headerSize == 1)
        #expect(header.tableBytes == 256 << 10)
        #expect(header.tableEntries == 32768)
        #expect(header.headerBytes == 65536)
        #expect(header.hasBackingFile && header.backingIsRaw && !header.needsCheck)
        #expect(header.maxImageSize == 32768 * 32768 * 65536)
        try header.validate(fileSize: 65536 + (256 << 10), limits: ImageLimits())
        let short = try #require(throws: KDCTError.self) { try QEDHeader.decode(Array(Self.headerBytes().prefix(50))) }
        #expect(short.code == .truncated)
        var wrong = Self.headerBytes()
        wrong[3] = 1
        #expect(try #require(throws: KDCTError.self) { try QEDHeader.decode(wrong) }.code == .invalidFormat)
    }

    private func validationError(_ bytes: [UInt8], fileSize: UInt64 = 64 << 20,
                                 limits: ImageLimits = ImageLimits()) throws -> KDCTError {
        let header = try QEDHeader.decode(bytes)
        return try #require(throws: KDCTError.self) { try header.validate(fileSize: fileSize, limits: limits) }
    }

    @Test(arguments: [0, 512, 2048, 12_288, 69_632, 134_217_728, 0x8000_0000] as [UInt32])
    func refusesInvalidClusterSizes(_ size: UInt32) throws {
        let error = try validationError(Self.headerBytes(clusterSize: size, l1Offset: 1 << 20))
        #expect(error.code == .corrupt)
        #expect(error.field == "cluster_size")
        #expect(error.message.contains("\(size)"))
    }

    @Test(arguments: [UInt32(0), 3, 5, 32, 0xFFFF_FFFF])
    func refusesInvalidTableSizes(_ size: UInt32) throws {
        let error = try validationError(Self.headerBytes(tableSize: size))
        #expect(error.code == .corrupt)
        #expect(error.field == "table_size")
    }

    @Test func refusesUnknownFeatureBits() throws {
        for features: UInt64 in [0x08, 0x100, 1 << 63, 0x0F] {
            let error = try validationError(Self.headerBytes(features: features))
            #expect(error.code == .unsupported)
            #expect(error.field == "features")
            #expect(error.message.contains(String(features & ~7, radix: 16)))
        }
        // Unknown compatible and autoclear bits are not a reason to refuse.
        try QEDHeader.decode(Self.headerBytes(compat: 0xFF, autoclear: 0xFF00)).validate(fileSize: 1 << 20, limits: ImageLimits())
    }

    @Test func refusesHostileSizesWithBoundedMemory() throws {
        // 64 MiB clusters x 16 = 1 GiB tables: above the table limit, refused before anything is read.
        let huge = try validationError(Self.headerBytes(clusterSize: 64 << 20, tableSize: 16))
        #expect(huge.code == .limitExceeded)
        #expect(try validationError(Self.headerBytes(imageSize: 1000)).field == "image_size")
        let tooBig = try validationError(Self.headerBytes(clusterSize: 4096, tableSize: 1, imageSize: 512 * 512 * 4096 + 512))
        #expect(tooBig.field == "image_size")
        #expect(try validationError(Self.headerBytes(clusterSize: 1 << 20, tableSize: 16, imageSize: 1 << 50)).code == .limitExceeded)
        #expect(try validationError(Self.headerBytes(headerSize: 0)).field == "header_size")
        #expect(try validationError(Self.headerBytes(l1Offset: 65536 + 512)).field == "l1_table_offset")
        #expect(try validationError(Self.headerBytes(headerSize: 2, l1Offset: 65536)).field == "l1_table_offset")
        #expect(try validationError(Self.headerBytes(l1Offset: 0)).field == "l1_table_offset")
        #expect(try validationError(Self.headerBytes(), fileSize: 65536 + 4096).code == .truncated)
        #expect(try validationError(Self.headerBytes(l1Offset: UInt64.max - 65535)).code == .truncated)
        let outside = try validationError(Self.headerBytes(features: 1, backingOffset: 65000, backingSize: 1000))
        #expect(outside.field == "backing_filename_offset")
        let long = try validationError(Self.headerBytes(headerSize: 2, features: 1, l1Offset: 131_072,
                                                        backingOffset: 64, backingSize: 5000))
        #expect(long.field == "backing_filename_size")
    }

    @Test func decodesL2Entries() {
        #expect(QEDClusterEntry(raw: 0) == .unallocated)
        #expect(QEDClusterEntry(raw: 1) == .zero)
        #expect(QEDClusterEntry(raw: 0x30000) == .data(offset: 0x30000))
    }
}
