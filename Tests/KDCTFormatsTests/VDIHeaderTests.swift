import Foundation
import Testing
@testable import KDCTFormats
import KDCTTestSupport

/// Header and block map decoding from bytes, valid and hostile.
@Suite struct VDIHeaderTests {
    @Test func decodesVersion11Header() throws {
        var image = SyntheticVDI(diskSize: 10 << 20)
        image.imageType = 4
        image.comment = "snapshot of the base"
        image.link = SyntheticVDI.uuid(7)
        image.parentModification = SyntheticVDI.uuid(8)
        let header = try VDIHeader.decode(image.headerBytes())
        #expect(header.fileInfo == "<<< Oracle VM VirtualBox Disk Image >>>")
        #expect(header.majorVersion == 1 && header.minorVersion == 1)
        #expect(header.headerSize == 0x190)
        #expect(header.imageType == .differencing)
        #expect(header.hasParent)
        #expect(header.comment == "snapshot of the base")
        #expect(header.blocksOffset == 0x200)
        #expect(header.dataOffset == 0x200 + 512)
        #expect(header.diskSize == 10 << 20)
        #expect(header.blockSize == 1 << 20)
        #expect(header.blockCount == 10)
        #expect(header.creationUUID.bytes == SyntheticVDI.uuid(1))
        #expect(header.linkUUID.bytes == SyntheticVDI.uuid(7))
        #expect(header.parentModificationUUID?.bytes == SyntheticVDI.uuid(8))
        #expect(header.lchsGeometry?.sectorSize == 512)
        try header.validate(fileSize: 1 << 20, limits: ImageLimits())
    }

    @Test func formatsUUIDsTheWayVirtualBoxShowsThem() {
        // Stored bytes d9 18 ec 45 c5 39 79 40 8d e1 ... : the first three fields are little-endian.
        let uuid = VDIUUID(bytes: [0xD9, 0x18, 0xEC, 0x45, 0xC5, 0x39, 0x79, 0x40,
                                   0x8D, 0xE1, 0xE3, 0x64, 0x37, 0x90, 0x16, 0x27])
        #expect(uuid.description == "45ec18d9-39c5-4079-8de1-e36437901627")
        #expect(!uuid.isNull)
        #expect(VDIUUID.null.isNull)
    }

    @Test func decodesVersion02Header() throws {
        var image = SyntheticVDI(diskSize: 3 << 20)
        image.version = 0x0000_0002
        image.fileInfo = "<<< innotek VirtualBox Disk Image >>>\n"
        let header = try VDIHeader.decode(image.headerBytes())
        #expect(header.headerSize == nil)
        #expect(header.blocksOffset == 0x1A4)
        #expect(header.dataOffset == 0x1A4 + 12)
        #expect(header.blockExtra == 0)
        #expect(header.parentModificationUUID == nil)
        #expect(header.diskSize == 3 << 20)
        #expect(header.blockCount == 3)
        #expect(header.creationUUID.bytes == SyntheticVDI.uuid(1))
        try header.validate(fileSize: 1 << 20, limits: ImageLimits())
    }

    @Test func version10UsesTheVersion1LayoutWithoutGeometry() throws {
        var image = SyntheticVDI(diskSize: 1 << 20)
        image.version = 0x0001_0000
        image.headerSize = 0x180
        let header = try VDIHeader.decode(image.headerBytes())
        #expect(header.lchsGeometry == nil)
        #expect(header.blockCount == 1)
        try header.validate(fileSize: 1 << 20, limits: ImageLimits())
    }

    @Test func refusesVersionsVirtualBoxDoesNotOpen() throws {
        for version: UInt32 in [0x0002_0000, 0x0000_0001, 0x0000_0003] {
            var image = SyntheticVDI(diskSize: 1 << 20)
            image.version = version
            let error = try #require(throws: KDCTError.self) { try VDIHeader.decode(image.headerBytes()) }
            #expect(error.code == .unsupported)
            #expect(error.message.contains("version"))
        }
    }

    @Test func refusesMissingSignature() throws {
        var bytes = SyntheticVDI(diskSize: 1 << 20).headerBytes()
        bytes[0x40] = 0
        let error = try #require(throws: KDCTError.self) { try VDIHeader.decode(bytes) }
        #expect(error.code == .invalidFormat)
        let short = try #require(throws: KDCTError.self) { try VDIHeader.decode(Array(bytes.prefix(0x60))) }
        #expect(short.code == .invalidFormat)
        var valid = SyntheticVDI(diskSize: 1 << 20).headerBytes()
        valid.removeLast(512 - 0x100)
        let truncated = try #require(throws: KDCTError.self) { try VDIHeader.decode(valid) }
        #expect(truncated.code == .truncated)
    }

    /// Validates a header made by `edit`; returns the error.
    private func validationError(_ edit: (inout SyntheticVDI) -> Void, fileSize: UInt64 = 1 << 30,
                                 limits: ImageLimits = ImageLimits()) throws -> KDCTError {
        var image = SyntheticVDI(diskSize: 4 << 20)
        edit(&image)
        let header = try VDIHeader.decode(image.headerBytes())
        return try #require(throws: KDCTError.self) { try header.validate(fileSize: fileSize, limits: limits) }
    }

    @Test func refusesBlockSizeNotAPowerOfTwo() throws {
        for size: UInt32 in [0, 100, 1_000_000, 3 << 20, 256] {
            let error = try validationError { $0.blockSize = size; $0.blockCount = 64 }
            #expect(error.code == .corrupt)
            #expect(error.field == "block size")
            #expect(error.message.contains("\(size)"))
        }
        let tooBig = try validationError { $0.blockSize = 1 << 30; $0.blockCount = 1 }
        #expect(tooBig.code == .limitExceeded)
    }

    @Test func refusesBlockCountBeyondTheLimit() throws {
        // 2^32 - 1 entries would be a 16 GiB block map: refused before anything is allocated.
        let error = try validationError { $0.blockCount = 0xFFFF_FFFF; $0.diskSize = 1 << 40 }
        #expect(error.code == .limitExceeded)
        #expect(error.message.contains("block map"))
        var limits = ImageLimits()
        limits.maxTableBytes = 1024
        let small = try validationError({ $0.blockCount = 4096; $0.diskSize = 4 << 30 }, limits: limits)
        #expect(small.code == .limitExceeded)
    }

    @Test func refusesDiskLargerThanTheMapCovers() throws {
        let error = try validationError { $0.blockCount = 3; $0.diskSize = (3 << 20) + 512 }
        #expect(error.code == .corrupt)
        #expect(error.field == "disk size")
        #expect(error.message.contains("3 blocks of 1048576 bytes"))
    }

    @Test func refusesOtherInconsistentHeaders() throws {
        #expect(try validationError { $0.imageType = 7 }.field == "image type")
        #expect(try validationError { $0.flags = 0x8000_0000 }.code == .unsupported)
        #expect(try validationError { $0.diskSize = 0 }.field == "disk size")
        #expect(try validationError { $0.blockExtra = 300 }.field == "block extra")
        #expect(try validationError { $0.headerSize = 0x100 }.field == "cbHeader")
        #expect(try validationError { $0.blocksAllocatedOverride = 5 }.field == "blocks allocated")
        #expect(try validationError { $0.imageType = 4 }.field == "link UUID")
        #expect(try validationError { $0.diskSize = 1 << 62; $0.blockCount = 4 }.code == .limitExceeded)
        // The map (4 entries at 0x200) must be inside the file.
        #expect(try validationError({ _ in }, fileSize: 0x200 + 8).code == .truncated)
    }

    @Test func blockMapEntriesBeyondTheFileAreCorrupt() throws {
        var image = SyntheticVDI(diskSize: 4 << 20)
        image.blocks[1] = .data([1, 2, 3])
        image.rawEntries[2] = 1_000
        let header = try VDIHeader.decode(image.headerBytes())
        var map = ByteWriter(count: 16)
        for (i, entry) in [VDIBlockMap.free, 0, 1_000, VDIBlockMap.zero].enumerated() { map.u32le(entry, at: 4 * i) }
        let blockMap = VDIBlockMap(bytes: map.bytes, header: header)
        #expect(blockMap.block(0) == .free)
        #expect(blockMap.block(1) == .data(hostOffset: UInt64(image.dataOffset)))
        #expect(blockMap.block(3) == .zero)
        let fileSize = UInt64(image.dataOffset) + (1 << 20)
        let error = try #require(throws: KDCTError.self) {
            try blockMap.validate(virtualSize: 4 << 20, blockSize: 1 << 20, fileSize: fileSize)
        }
        #expect(error.code == .corrupt)
        #expect(error.field == "block map entry 2")
        #expect(error.message.contains("slot 1000"))
    }
}
