import Foundation
import Testing
@testable import KDCTFormats
import KDCTTestSupport

/// Writes `bytes` to `dir/name`.
private func writeFile(_ bytes: [UInt8], _ dir: TemporaryDirectory, _ name: String) throws -> String {
    let path = dir.file(name)
    try Data(bytes).write(to: URL(fileURLWithPath: path))
    return path
}

private func sha256(_ bytes: [UInt8], dir: TemporaryDirectory) throws -> String {
    try VHDFamilyTest.fileSHA256(writeFile(bytes, dir, "expected-\(bytes.count).raw"))
}

/// Raw bytes of the test pattern of `size`.
private func patternBytes(size: UInt64, dir: TemporaryDirectory) throws -> [UInt8] {
    let path = try TestPattern.writeRaw(to: dir.file("pattern-\(size).raw"), size: size)
    return [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
}

@Suite struct VHDXDecodingTests {
    @Test func knownGUIDsParsed() {
        for guid in [VHDXGUID.batRegion, .metadataRegion, .fileParameters, .virtualDiskSize, .virtualDiskID,
                     .logicalSectorSize, .physicalSectorSize, .parentLocator, .vhdxParentLocatorType] {
            #expect(!guid.isZero)
        }
        // Stored layout: the first three fields little-endian.
        #expect(VHDXGUID.batRegion.bytes.prefix(4) == [0x66, 0x77, 0xC2, 0x2D])
        #expect(VHDXGUID.batRegion.description == "2dc27766-f623-4200-9d64-115e9bfd4a08")
        #expect(VHDXGUID("{2DC27766-F623-4200-9D64-115E9BFD4A08}") == .batRegion)
        #expect(VHDXGUID("not a guid") == nil)
    }

    @Test func headerSelectionPrefersTheValidHigherSequence() throws {
        let builder = VHDXTestBuilder(virtualSize: 4 << 20)
        let one = try VHDXHeader.decode(builder.header(sequence: 5))
        let two = try VHDXHeader.decode(builder.header(sequence: 9))
        #expect(one.isValid && two.isValid)
        #expect(try VHDXHeader.selectCurrent([one, two]) == 1)
        #expect(try VHDXHeader.selectCurrent([two, one]) == 0)
        var broken = builder.header(sequence: 12)
        broken[200] ^= 1
        let bad = try VHDXHeader.decode(broken)
        #expect(!bad.checksumIsValid)
        #expect(try VHDXHeader.selectCurrent([bad, one]) == 1)
        #expect(throws: KDCTError.self) { try VHDXHeader.selectCurrent([bad, bad]) }
        // Equal sequence numbers are accepted only for identical headers (Disk2vhd).
        #expect(try VHDXHeader.selectCurrent([one, one]) == 0)
        var other = VHDXTestBuilder(virtualSize: 4 << 20)
        other.logLength = 2 << 20
        let different = try VHDXHeader.decode(other.header(sequence: 5))
        #expect(throws: KDCTError.self) { try VHDXHeader.selectCurrent([one, different]) }
    }

    @Test func batGeometryInterleavesSectorBitmapEntries() {
        let make = { (size: UInt64, block: UInt32, sector: UInt32, parent: Bool) in
            VHDXBATGeometry(VHDXDiskParameters(blockSize: block, leaveBlocksAllocated: false, hasParent: parent,
                                               virtualDiskSize: size, virtualDiskID: .zero, logicalSectorSize: sector,
                                               physicalSectorSize: 4096))
        }
        let g = make(10 << 30, 32 << 20, 512, false)
        #expect(g.chunkRatio == 128)
        #expect(g.dataBlocks == 320)
        #expect(g.totalEntries == 320 + 319 / 128)
        #expect(g.payloadIndex(127) == 127 && g.payloadIndex(128) == 129 && g.bitmapIndex(chunk: 0) == 128)
        let d = make(10 << 30, 32 << 20, 512, true)
        #expect(d.totalEntries == 3 * 129)
        #expect(make(1 << 30, 1 << 20, 4096, false).chunkRatio == 32768)
        #expect(make(1 << 30, 256 << 20, 512, false).chunkRatio == 16)
        #expect(make(0, 1 << 20, 512, false).totalEntries == 0)
    }

    @Test func logOverlayKeepsTheLatestWrite() {
        let a = [UInt8](repeating: 0xAA, count: 4096), b = [UInt8](repeating: 0xBB, count: 4096)
        let overlay = VHDXLogOverlay(writes: [.data(fileOffset: 8192, bytes: a), .zero(fileOffset: 4096, length: 8192),
                                              .data(fileOffset: 12288, bytes: b), .data(fileOffset: 0, bytes: a)])
        var buffer = [UInt8](repeating: 0x11, count: 20480)
        buffer.withUnsafeMutableBytes { overlay.patch($0, at: 0) }
        #expect(buffer[0..<4096].allSatisfy { $0 == 0xAA })
        #expect(buffer[4096..<12288].allSatisfy { $0 == 0 })
        #expect(buffer[12288..<16384].allSatisfy { $0 == 0xBB })
        #expect(buffer[16384...].allSatisfy { $0 == 0x11 })
        var shifted = [UInt8](repeating: 0x11, count: 100)
        shifted.withUnsafeMutableBytes { overlay.patch($0, at: 12288 - 50) }
        #expect(shifted[0..<50].allSatisfy { $0 == 0 } && shifted[50...].allSatisfy { $0 == 0xBB })
    }

    @Test func logEntriesValidateAndSequencesNeedTheirTail() throws {
        let guid = VHDXGUID("12345678-1234-1234-1234-123456789abc") ?? .zero
        let sector = [UInt8](repeating: 7, count: 4096)
        let first = VHDXTestBuilder.logEntry(sequence: 41, tail: 0, logGUID: guid, flushed: 0, last: 0,
                                             writes: [.data(fileOffset: 1 << 20, bytes: sector)])
        let second = VHDXTestBuilder.logEntry(sequence: 42, tail: UInt32(first.count), logGUID: guid, flushed: 0, last: 0,
                                              writes: [.zero(fileOffset: 2 << 20, length: 8192)])
        var log = [UInt8](repeating: 0, count: 1 << 20)
        log.replaceSubrange(0..<first.count, with: first)
        log.replaceSubrange(first.count..<(first.count + second.count), with: second)
        let entry = try #require(VHDXLog.entry(in: log, at: 0, logGUID: guid))
        #expect(entry.sequenceNumber == 41 && entry.writes == [.data(fileOffset: 1 << 20, bytes: sector)])
        #expect(VHDXLog.entry(in: log, at: 0, logGUID: .zero) == nil)
        // The head's tail is the second entry: only it is replayed.
        let active = try #require(try VHDXLog.activeSequence(in: log, logGUID: guid, maxEntries: 100))
        #expect(active.map(\.sequenceNumber) == [42])
        // A corrupted byte invalidates the entry (checksum).
        var damaged = log
        damaged[first.count + 100] ^= 1
        #expect(try VHDXLog.activeSequence(in: damaged, logGUID: guid, maxEntries: 100)?.map(\.sequenceNumber) == [41])
        // A head whose tail lies outside its sequence makes no valid sequence.
        var orphan = [UInt8](repeating: 0, count: 1 << 20)
        let lonely = VHDXTestBuilder.logEntry(sequence: 9, tail: 65536, logGUID: guid, flushed: 0, last: 0, writes: [])
        orphan.replaceSubrange(0..<lonely.count, with: lonely)
        #expect(try VHDXLog.activeSequence(in: orphan, logGUID: guid, maxEntries: 100) == nil)
        // Sequence length limit.
        let chained = VHDXTestBuilder.logEntry(sequence: 42, tail: 0, logGUID: guid, flushed: 0, last: 0, writes: [])
        var two = log
        two.replaceSubrange(first.count..<(first.count + chained.count), with: chained)
        #expect(throws: KDCTError.self) { try VHDXLog.activeSequence(in: two, logGUID: guid, maxEntries: 1) }
        #expect(try VHDXLog.activeSequence(in: two, logGUID: guid, maxEntries: 2)?.count == 2)
    }

    @Test func logEntryWrappingAroundTheRingEnd() throws {
        let guid = VHDXGUID("12345678-1234-1234-1234-123456789abc") ?? .zero
        let sector = [UInt8](repeating: 3, count: 4096)
        let entry = VHDXTestBuilder.logEntry(sequence: 5, tail: UInt32((1 << 20) - 4096), logGUID: guid, flushed: 0, last: 0,
                                             writes: [.data(fileOffset: 4 << 20, bytes: sector)])
        var log = [UInt8](repeating: 0, count: 1 << 20)
        log.replaceSubrange(((1 << 20) - 4096)..<(1 << 20), with: entry[0..<4096])
        log.replaceSubrange(0..<4096, with: entry[4096..<8192])
        let active = try #require(try VHDXLog.activeSequence(in: log, logGUID: guid, maxEntries: 10))
        #expect(active.first?.writes == [.data(fileOffset: 4 << 20, bytes: sector)])
    }
}

/// VHDX made by qemu-img from the test pattern.
@Suite struct VHDXQemuTests {
    @Test(arguments: [("dynamic", "1M"), ("dynamic", "8M"), ("dynamic", "32M"), ("dynamic", "256M"),
                      ("fixed", "1M"), ("fixed", "256M")])
    func qemuMadeVHDXConvertsIdentically(subformat: String, blockSize: String) throws {
        let dir = try TemporaryDirectory()
        let source = try TestPattern.writeRaw(to: dir.file("src.raw"), size: 20 << 20 + 4096 * 3)
        let vhdx = dir.file("disk.vhdx")
        try qemuImg("convert", "-f", "raw", "-O", "vhdx", "-o", "subformat=\(subformat),block_size=\(blockSize)", source, vhdx)
        let device = try ImageOpener.open(vhdx)
        #expect(device.info.format == .vhdx)
        #expect(device.info.subformat == subformat)
        #expect(device.virtualSize == (try VHDFamilyTest.qemuVirtualSize(vhdx, format: "vhdx")))
        #expect(device.info.clusterSize == ["1M": 1 << 20, "8M": 8 << 20, "32M": 32 << 20, "256M": 256 << 20][blockSize])
        if subformat == "dynamic" && device.info.clusterSize ?? 0 <= 8 << 20 {
            let data = try device.allExtents().filter { $0.status == .data }.reduce(0) { $0 + $1.length }
            #expect(data < device.virtualSize, "empty blocks must not be data extents")
        }
        for format in [ImageFormat.raw, .qcow2] {
            let out = dir.file("out.\(format)")
            try convertImage(vhdx, to: out, format: format)
            try expectQemuIdentical(vhdx, out, formatA: "vhdx", formatB: format.rawValue)
            try expectQemuIdentical(source, out, formatA: "raw", formatB: format.rawValue)
            if format == .qcow2 { try expectQemuCheckClean(out) }
        }
    }

    @Test func emptyMultiTerabyteVHDXWalksInMetadataTime() throws {
        let dir = try TemporaryDirectory()
        let vhdx = dir.file("big.vhdx")
        try qemuImg("create", "-f", "vhdx", "-o", "block_size=256M", vhdx, "16T")
        let device = try ImageOpener.open(vhdx)
        #expect(device.virtualSize == 16 << 40)
        let extents = try device.allExtents()
        #expect(extents.count <= 2 && !extents.contains { $0.status == .data }, "\(extents.prefix(3))")
    }
}

/// VHDX written by the tests: 4096-byte sectors, differencing chains, logs.
@Suite struct VHDXBuiltTests {
    /// A builder holding the pattern's non-empty blocks as full blocks (empty ones left not present).
    static func patternBuilder(size: UInt64, blockSize: UInt32, sector: UInt32, dir: TemporaryDirectory) throws -> VHDXTestBuilder {
        let pattern = try patternBytes(size: size, dir: dir)
        var builder = VHDXTestBuilder(virtualSize: size)
        builder.blockSize = blockSize
        builder.logicalSectorSize = sector
        let blockBytes = Int(blockSize)
        for index in 0..<((pattern.count + blockBytes - 1) / blockBytes) {
            let start = index * blockBytes
            var data = Array(pattern[start..<min(start + blockBytes, pattern.count)])
            guard data.contains(where: { $0 != 0 }) else { continue }
            data += [UInt8](repeating: 0, count: blockBytes - data.count)
            builder.blocks[index] = .full(data)
        }
        return builder
    }

    @Test(arguments: [512, 4096] as [UInt32])
    func builtVHDXWithLogicalSectorSizeConvertsIdentically(sector: UInt32) throws {
        let dir = try TemporaryDirectory()
        let size: UInt64 = 12 << 20
        let source = try TestPattern.writeRaw(to: dir.file("src.raw"), size: size)
        let builder = try Self.patternBuilder(size: size, blockSize: 1 << 20, sector: sector, dir: dir)
        let vhdx = try builder.write(to: dir.file("disk.vhdx"))
        let device = try ImageOpener.open(vhdx)
        #expect(device.info.formatSpecific["logical-sector-size"] == .unsigned(UInt64(sector)))
        #expect(try GuestDigest.sha256(of: device) == (try VHDFamilyTest.fileSHA256(source)))
        for format in [ImageFormat.raw, .qcow2] {
            let out = dir.file("out.\(format)")
            try convertImage(vhdx, to: out, format: format)
            try expectQemuIdentical(source, out, formatA: "raw", formatB: format.rawValue)
            if format == .qcow2 { try expectQemuCheckClean(out) }
        }
        if sector == 512 {
            // qemu reads 512-byte-sector VHDX: it must agree too.
            try expectQemuIdentical(vhdx, source, formatA: "vhdx", formatB: "raw")
        }
    }

    @Test func blockStatesReadAsSpecified() throws {
        let dir = try TemporaryDirectory()
        var builder = VHDXTestBuilder(virtualSize: 6 << 20)
        builder.blocks[0] = .full(VHDTestBuilder.noise(1 << 20, seed: 1))
        builder.blocks[1] = .zero
        builder.blocks[2] = .unmapped
        builder.blocks[3] = .undefined
        builder.blocks[5] = .full(VHDTestBuilder.noise(1 << 20, seed: 2))
        let device = try ImageOpener.open(try builder.write(to: dir.file("states.vhdx")))
        #expect(try device.allExtents().map(\.status) == [.data, .zero, .absent, .data])
        #expect(try GuestDigest.sha256(of: device) == (try sha256(builder.expectedContent(), dir: dir)))
    }

    /// A parent made by qemu-img (512-byte sectors, 1 MiB blocks) and its data write GUID.
    static func qemuParent(_ dir: TemporaryDirectory, size: UInt64) throws -> (path: String, guid: VHDXGUID, bytes: [UInt8]) {
        let source = try TestPattern.writeRaw(to: dir.file("parent.raw"), size: size)
        let parent = dir.file("parent.vhdx")
        try qemuImg("convert", "-f", "raw", "-O", "vhdx", "-o", "subformat=dynamic,block_size=1M", source, parent)
        let layer = try #require(VHDXImage.vhdxLayer(of: try ImageOpener.open(parent)))
        return (parent, layer.header.dataWriteGUID, [UInt8](try Data(contentsOf: URL(fileURLWithPath: source))))
    }

    static func child(size: UInt64, linkage: VHDXGUID, relative: String = ".\\parent.vhdx") -> VHDXTestBuilder {
        var child = VHDXTestBuilder(virtualSize: size)
        child.parentLocator = [("parent_linkage", "{\(linkage)}"), ("relative_path", relative),
                               ("absolute_win32_path", "\\\\?\\C:\\vms\\parent.vhdx")]
        child.blocks[0] = .full(VHDTestBuilder.noise(1 << 20, seed: 11))
        child.blocks[1] = .partial(VHDTestBuilder.noise(1 << 20, seed: 12), present: [0..<3, 17..<900, 2047..<2048])
        child.blocks[2] = .zero
        child.blocks[4] = .undefined
        child.blocks[7] = .partial(VHDTestBuilder.noise(1 << 20, seed: 13), present: [])
        child.blocks[9] = .partial(VHDTestBuilder.noise(1 << 20, seed: 14), present: [1000..<1001])
        return child
    }

    @Test func differencingChainFlattensToParentOverlaidWithChild() throws {
        let dir = try TemporaryDirectory()
        let size: UInt64 = 12 << 20
        let parent = try Self.qemuParent(dir, size: size)
        let builder = Self.child(size: size, linkage: parent.guid)
        let child = try builder.write(to: dir.file("child.avhdx"))
        let expected = try writeFile(builder.expectedContent(over: parent.bytes), dir, "expected.raw")
        let device = try ImageOpener.open(child)
        #expect(device is ChainedBlockDevice)
        #expect(device.info.subformat == "differencing")
        #expect(device.info.references.contains { $0.opened && $0.name == ".\\parent.vhdx" })
        #expect(try GuestDigest.sha256(of: device) == (try VHDFamilyTest.fileSHA256(expected)))
        // Sector 3 of block 1 is not in the child: it comes from the parent.
        #expect(try device.extent(at: (1 << 20) + 3 * 512, maxLength: 1 << 20).depth == 1)
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: expected)))
        for (offset, length) in [((1 << 20) + 2 * 512 + 100, 1000), ((9 << 20) + 999 * 512 - 1, 515), (0, 3 << 20)] {
            #expect(try device.readBytes(at: UInt64(offset), count: length) == Array(bytes[offset..<(offset + length)]))
        }
        for format in [ImageFormat.raw, .qcow2] {
            let out = dir.file("flat.\(format)")
            try convertImage(child, to: out, format: format)
            try expectQemuIdentical(expected, out, formatA: "raw", formatB: format.rawValue)
            if format == .qcow2 { try expectQemuCheckClean(out) }
        }
    }

    @Test func fourKiBSectorDifferencingChain() throws {
        let dir = try TemporaryDirectory()
        let size: UInt64 = 12 << 20
        var parentBuilder = try Self.patternBuilder(size: size, blockSize: 1 << 20, sector: 4096, dir: dir)
        parentBuilder.dataWriteGUID = VHDXGUID("99999999-8888-7777-6666-555555555555") ?? .zero
        try parentBuilder.write(to: dir.file("parent.vhdx"))
        var child = VHDXTestBuilder(virtualSize: size)
        child.logicalSectorSize = 4096
        child.parentLocator = [("parent_linkage", "{\(parentBuilder.dataWriteGUID)}"), ("relative_path", "parent.vhdx")]
        child.blocks[3] = .partial(VHDTestBuilder.noise(1 << 20, seed: 5), present: [0..<1, 100..<101, 255..<256])
        child.blocks[11] = .full(VHDTestBuilder.noise(1 << 20, seed: 6))
        let path = try child.write(to: dir.file("child.vhdx"))
        let parentContent = parentBuilder.expectedContent()
        #expect(try GuestDigest.sha256(of: ImageOpener.open(path))
                == (try sha256(child.expectedContent(over: parentContent), dir: dir)))
        // A 512-byte-sector child cannot sit on a 4096-byte-sector parent.
        var mismatched = child
        mismatched.logicalSectorSize = 512
        mismatched.blocks[3] = .partial(VHDTestBuilder.noise(1 << 20, seed: 5), present: [0..<8])
        VHDFamilyTest.expectOpenError(try mismatched.write(to: dir.file("mismatch.vhdx")), .corrupt, mentions: ["logical sector size"])
    }

    @Test func missingOrWrongParent() throws {
        let dir = try TemporaryDirectory()
        let builder = Self.child(size: 12 << 20, linkage: VHDXGUID("01234567-89ab-cdef-0123-456789abcdef") ?? .zero)
        let child = try builder.write(to: dir.file("child.vhdx"))
        VHDFamilyTest.expectOpenError(child, .notFound, mentions: ["parent.vhdx", "relative_path", "absolute_win32_path"])
        let info = try ImageOpener.inspect(child)
        #expect(info.backingFilename == ".\\parent.vhdx")
        #expect(info.references.count == 2 && info.references.allSatisfy { !$0.opened })
        #expect(info.formatSpecific["parent-locator"]?["relative_path"] == .string(".\\parent.vhdx"))
        // A parent whose data write GUID differs from the linkage was modified after the child was made.
        _ = try Self.qemuParent(dir, size: 12 << 20)
        VHDFamilyTest.expectOpenError(child, .corrupt, mentions: ["data write GUID"])
    }

    /// A dynamic disk whose log, when replayed, maps block 2 and zeroes part of block 0; an older entry before
    /// the tail writes junk that must not appear.
    static func loggedDisk(flushed: UInt64? = nil) -> (builder: VHDXTestBuilder, expected: [UInt8]) {
        var builder = VHDXTestBuilder(virtualSize: 8 << 20)
        let logGUID = VHDXGUID("0badcafe-0000-4000-8000-000000000001") ?? .zero
        builder.logGUID = logGUID
        let blockA = VHDTestBuilder.noise(1 << 20, seed: 21), blockB = VHDTestBuilder.noise(1 << 20, seed: 22)
        builder.blocks[0] = .full(blockA)
        builder.blocks[2] = .full(blockB)
        let blockAOffset = builder.payloadOffset(of: 0) ?? 0
        let blockBOffset = builder.payloadOffset(of: 2) ?? 0
        let fileSize = UInt64(builder.build().count)
        // On disk the BAT does not map block 2 yet (the crash came before the BAT write was flushed).
        let geometry = builder.geometry
        builder.batOverride[geometry.payloadIndex(2)] = 0
        // The BAT's first 4 KiB as the log holds it: block 0 and block 2 mapped.
        var batSector = [UInt8](repeating: 0, count: 4096)
        batSector.vhdxPutLE(blockAOffset | 6, at: geometry.payloadIndex(0) * 8, size: 8)
        batSector.vhdxPutLE(blockBOffset | 6, at: geometry.payloadIndex(2) * 8, size: 8)
        let junk = [UInt8](repeating: 0xEE, count: 4096)
        let old = VHDXTestBuilder.logEntry(sequence: 700, tail: 0, logGUID: logGUID, flushed: fileSize, last: fileSize,
                                           writes: [.data(fileOffset: blockAOffset + 65536, bytes: junk)])
        let head = VHDXTestBuilder.logEntry(sequence: 701, tail: UInt32(old.count), logGUID: logGUID,
                                            flushed: flushed ?? fileSize, last: fileSize + (3 << 20),
                                            writes: [.data(fileOffset: VHDXTestBuilder.batOffset, bytes: batSector),
                                                     .zero(fileOffset: blockAOffset + 8192, length: 8192)])
        let stale = VHDXTestBuilder.logEntry(sequence: 702, tail: UInt32(old.count), logGUID: .zero, flushed: 0, last: 0,
                                             writes: [.data(fileOffset: blockAOffset, bytes: junk)])
        builder.logEntries = [old, head, stale]
        var expected = [UInt8](repeating: 0, count: 8 << 20)
        expected.replaceSubrange(0..<(1 << 20), with: blockA)
        expected.replaceSubrange(8192..<16384, with: [UInt8](repeating: 0, count: 8192))
        expected.replaceSubrange((2 << 20)..<(3 << 20), with: blockB)
        return (builder, expected)
    }

    @Test func logIsReplayedInMemoryFromItsTail() throws {
        let dir = try TemporaryDirectory()
        let (builder, expected) = Self.loggedDisk()
        let path = try builder.write(to: dir.file("logged.vhdx"))
        let before = try VHDFamilyTest.fileSHA256(path)
        let device = try ImageOpener.open(path)
        #expect(device.info.dirty)
        #expect(device.info.notes.contains { $0.hasPrefix("log replayed: 1 entry") }, "\(device.info.notes)")
        #expect(device.info.formatSpecific["log-replay"]?["entries"] == .unsigned(1))
        #expect(try GuestDigest.sha256(of: device) == (try sha256(expected, dir: dir)))
        try convertImage(path, to: dir.file("out.qcow2"), format: .qcow2)
        try expectQemuIdentical(try writeFile(expected, dir, "expected.raw"), dir.file("out.qcow2"), formatA: "raw", formatB: "qcow2")
        #expect(try VHDFamilyTest.fileSHA256(path) == before, "the file must not be modified")
    }

    @Test func logProblems() throws {
        let dir = try TemporaryDirectory()
        // The log says the file was longer than it is: truncated.
        let (short, _) = Self.loggedDisk(flushed: 1 << 40)
        VHDFamilyTest.expectOpenError(try short.write(to: dir.file("short.vhdx")), .truncated, mentions: ["truncated"])
        // Sequence longer than the limit.
        var limits = OpenOptions()
        limits.limits.maxLogEntries = 0
        VHDFamilyTest.expectOpenError(try Self.loggedDisk().builder.write(to: dir.file("limit.vhdx")), .limitExceeded, options: limits)
        // A log GUID without any entry: nothing to replay, the disk opens as it is.
        var empty = VHDXTestBuilder(virtualSize: 4 << 20)
        empty.logGUID = VHDXGUID("0badcafe-0000-4000-8000-000000000009") ?? .zero
        let device = try ImageOpener.open(try empty.write(to: dir.file("empty-log.vhdx")))
        #expect(device.info.notes.contains { $0.contains("no valid entry sequence") })
    }

    @Test func corpusLogReplayIsNeeded() throws {
        guard let corpus = Corpus.load() else { return }
        let dir = try TemporaryDirectory()
        for entry in corpus.entries where entry.expect == "ok-after-log-replay" {
            // The same file with its log GUID cleared (no replay) reads differently from the manifest.
            var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: corpus.directory + "/" + entry.file)))
            for index in 0..<2 { bytes.editVHDXHeader(index) { $0.replaceSubrange(48..<64, with: [UInt8](repeating: 0, count: 16)) } }
            let path = try writeFile(bytes, dir, FilePaths.lastComponent(of: entry.file))
            let digest = try? GuestDigest.sha256(of: ImageOpener.open(path))
            #expect(digest != entry.sha256, "\(entry.file): the replay made no difference")
        }
    }
}

/// Hostile VHDX: each must fail with a clear error, before allocating anything sized by the bad field.
@Suite struct VHDXHostileTests {
    static func base() -> [UInt8] {
        var builder = VHDXTestBuilder(virtualSize: 4 << 20)
        builder.blocks[1] = .full(VHDTestBuilder.noise(1 << 20, seed: 3))
        return builder.build()
    }

    static let regionTableOffsets = [192 << 10, 256 << 10]

    /// Replaces both region tables with one holding `entries`.
    static func withRegions(_ entries: [(VHDXGUID, UInt64, UInt32, UInt32)], count: UInt32? = nil) -> [UInt8] {
        var bytes = base()
        var table = VHDXTestBuilder(virtualSize: 4 << 20).regionTable(entries: entries)
        if let count {
            table.vhdxPutLE(UInt64(count), at: 8, size: 4)
            VHDXTestBuilder.setCRC(&table, at: 4)
        }
        for offset in regionTableOffsets { bytes.replaceSubrange(offset..<(offset + table.count), with: table) }
        return bytes
    }

    @Test func baselineOpens() throws {
        let dir = try TemporaryDirectory()
        let device = try ImageOpener.open(try writeFile(Self.base(), dir, "ok.vhdx"))
        #expect(device.virtualSize == 4 << 20)
    }

    @Test func headerChecksumMismatch() throws {
        let dir = try TemporaryDirectory()
        var bytes = Self.base()
        bytes[(64 << 10) + 300] ^= 1
        bytes[(128 << 10) + 300] ^= 1
        VHDFamilyTest.expectOpenError(try writeFile(bytes, dir, "h.vhdx"), .checksum, mentions: ["header 1", "header 2"])
        var one = Self.base()
        one[(128 << 10) + 300] ^= 1  // the newer header broken: the older one is used
        #expect(try ImageOpener.open(try writeFile(one, dir, "one.vhdx")).info.formatSpecific["current-header"] == .unsigned(1))
    }

    @Test func regionTableProblems() throws {
        let dir = try TemporaryDirectory()
        let bat = VHDXTestBuilder.batOffset, meta = VHDXTestBuilder.metadataOffset
        let overlapping = Self.withRegions([(.batRegion, bat, 1 << 20, 1), (.metadataRegion, bat, 1 << 20, 1)])
        VHDFamilyTest.expectOpenError(try writeFile(overlapping, dir, "overlap.vhdx"), .corrupt, mentions: ["overlaps"])
        let onLog = Self.withRegions([(.batRegion, bat, 1 << 20, 1), (.metadataRegion, 1 << 20, 1 << 20, 1)])
        VHDFamilyTest.expectOpenError(try writeFile(onLog, dir, "onlog.vhdx"), .corrupt, mentions: ["overlaps the log"])
        let many = Self.withRegions([(.batRegion, bat, 1 << 20, 1), (.metadataRegion, meta, 1 << 20, 1)], count: 3000)
        VHDFamilyTest.expectOpenError(try writeFile(many, dir, "many.vhdx"), .corrupt, mentions: ["3000 entries", "2047"])
        let unaligned = Self.withRegions([(.batRegion, bat + 4096, 1 << 20, 1), (.metadataRegion, meta, 1 << 20, 1)])
        VHDFamilyTest.expectOpenError(try writeFile(unaligned, dir, "unaligned.vhdx"), .corrupt, mentions: ["multiples of 1 MiB"])
        let unknown = VHDXGUID("deadbeef-0000-0000-0000-000000000000") ?? .zero
        let required = Self.withRegions([(.batRegion, bat, 1 << 20, 1), (.metadataRegion, meta, 1 << 20, 1),
                                         (unknown, 16 << 20, 1 << 20, 1)])
        VHDFamilyTest.expectOpenError(try writeFile(required, dir, "required.vhdx"), .unsupported, mentions: ["deadbeef"])
        let noMetadata = Self.withRegions([(.batRegion, bat, 1 << 20, 1)])
        VHDFamilyTest.expectOpenError(try writeFile(noMetadata, dir, "nometa.vhdx"), .corrupt, mentions: ["metadata region"])
        var badCRC = Self.base()
        for offset in Self.regionTableOffsets { badCRC[offset + 1000] ^= 1 }
        VHDFamilyTest.expectOpenError(try writeFile(badCRC, dir, "crc.vhdx"), .checksum, mentions: ["region table checksum"])
    }

    @Test func logLengthNotAMultipleOfOneMiB() throws {
        let dir = try TemporaryDirectory()
        var bytes = Self.base()
        for index in 0..<2 { bytes.editVHDXHeader(index) { $0.vhdxPutLE(1 << 20 + 4096, at: 68, size: 4) } }
        VHDFamilyTest.expectOpenError(try writeFile(bytes, dir, "log.vhdx"), .corrupt, mentions: ["log length 1052672"])
        var huge = Self.base()
        // A log of 4 GiB - 1 MiB named by a live log GUID: refused by the size limit, never allocated.
        for index in 0..<2 {
            huge.editVHDXHeader(index) {
                $0.vhdxPutLE(0xFFF0_0000, at: 68, size: 4)
                $0.replaceSubrange(48..<64, with: [UInt8](repeating: 1, count: 16))
            }
        }
        VHDFamilyTest.expectOpenError(try writeFile(huge, dir, "hugelog.vhdx"), .limitExceeded, mentions: ["log length"])
    }

    /// Offset of metadata item `index` (in builder order: parameters, size, id, logical, physical).
    static func metadataItemOffset(_ bytes: [UInt8], _ index: Int) -> Int {
        let entry = Int(VHDXTestBuilder.metadataOffset) + 32 + index * 32
        let offset = Int(bytes[entry + 16]) | Int(bytes[entry + 17]) << 8 | Int(bytes[entry + 18]) << 16
        return Int(VHDXTestBuilder.metadataOffset) + offset
    }

    @Test(arguments: [0, 3 << 20, 512 << 10, 512 << 20] as [UInt32])
    func badBlockSize(blockSize: UInt32) throws {
        let dir = try TemporaryDirectory()
        var bytes = Self.base()
        bytes.vhdxPutLE(UInt64(blockSize), at: Self.metadataItemOffset(bytes, 0), size: 4)
        VHDFamilyTest.expectOpenError(try writeFile(bytes, dir, "bs.vhdx"), .corrupt, mentions: ["block size \(blockSize)"])
    }

    @Test func badSectorSizeAndVirtualSize() throws {
        let dir = try TemporaryDirectory()
        var sector = Self.base()
        sector.vhdxPutLE(1024, at: Self.metadataItemOffset(sector, 3), size: 4)
        VHDFamilyTest.expectOpenError(try writeFile(sector, dir, "sector.vhdx"), .corrupt, mentions: ["logical sector size 1024"])
        var odd = Self.base()
        odd.vhdxPutLE((4 << 20) + 100, at: Self.metadataItemOffset(odd, 1), size: 8)
        VHDFamilyTest.expectOpenError(try writeFile(odd, dir, "odd.vhdx"), .corrupt, mentions: ["virtual disk size"])
        // 64 TiB with 1 MiB blocks needs a 512 MiB BAT: refused by the table limit before reading it.
        var big = Self.base()
        big.vhdxPutLE(64 << 40, at: Self.metadataItemOffset(big, 1), size: 8)
        VHDFamilyTest.expectOpenError(try writeFile(big, dir, "big.vhdx"), .limitExceeded, mentions: ["BAT size"])
    }

    @Test func metadataProblems() throws {
        let dir = try TemporaryDirectory()
        var missing = Self.base()
        let table = Int(VHDXTestBuilder.metadataOffset)
        missing.vhdxPutLE(4, at: table + 10, size: 2)  // drop the physical sector size entry
        VHDFamilyTest.expectOpenError(try writeFile(missing, dir, "missing.vhdx"), .corrupt, mentions: ["physical sector size is missing"])
        var outside = Self.base()
        outside.vhdxPutLE(2 << 20, at: table + 32 + 16, size: 4)  // file parameters beyond the 1 MiB region
        VHDFamilyTest.expectOpenError(try writeFile(outside, dir, "outside.vhdx"), .corrupt, mentions: ["end within"])
        var required = Self.base()
        required.replaceSubrange((table + 32)..<(table + 48), with: (VHDXGUID("feedface-0000-0000-0000-000000000000") ?? .zero).bytes)
        VHDFamilyTest.expectOpenError(try writeFile(required, dir, "reqmeta.vhdx"), .unsupported, mentions: ["feedface"])
        var parentless = Self.base()
        parentless.vhdxPutLE(2, at: Self.metadataItemOffset(parentless, 0) + 4, size: 4)  // has-parent, no locator
        VHDFamilyTest.expectOpenError(try writeFile(parentless, dir, "parentless.vhdx"), .corrupt, mentions: ["no parent locator"])
    }

    @Test func batEntryProblems() throws {
        let dir = try TemporaryDirectory()
        let bat = Int(VHDXTestBuilder.batOffset)
        var beyond = Self.base()
        beyond.vhdxPutLE(UInt64(1 << 40) | 6, at: bat + 8 * 2, size: 8)
        VHDFamilyTest.expectOpenError(try writeFile(beyond, dir, "beyond.vhdx"), .truncated, mentions: ["BAT entry 2", "past the end of the file"])
        var onMetadata = Self.base()
        onMetadata.vhdxPutLE(VHDXTestBuilder.metadataOffset | 6, at: bat + 8 * 2, size: 8)
        VHDFamilyTest.expectOpenError(try writeFile(onMetadata, dir, "onmeta.vhdx"), .corrupt, mentions: ["overlaps metadata"])
        var twice = Self.base()
        twice.replaceSubrange((bat + 16)..<(bat + 24), with: twice[(bat + 8)..<(bat + 16)])
        VHDFamilyTest.expectOpenError(try writeFile(twice, dir, "twice.vhdx"), .corrupt, mentions: ["overlap"])
        var partial = Self.base()
        partial[bat + 8] |= 7  // partially present in a dynamic disk
        VHDFamilyTest.expectOpenError(try writeFile(partial, dir, "partial.vhdx"), .corrupt, mentions: ["partially present"])
        var reservedState = Self.base()
        reservedState[bat] = 4
        VHDFamilyTest.expectOpenError(try writeFile(reservedState, dir, "state.vhdx"), .corrupt, mentions: ["undefined state 4"])
        var reservedBits = Self.base()
        reservedBits[bat + 8] |= 0x80
        VHDFamilyTest.expectOpenError(try writeFile(reservedBits, dir, "bits.vhdx"), .corrupt, mentions: ["reserved bits"])
    }

    @Test func shortFiles() throws {
        let dir = try TemporaryDirectory()
        let bytes = Self.base()
        VHDFamilyTest.expectOpenError(try writeFile(Array(bytes.prefix(100 << 10)), dir, "tiny.vhdx"), .truncated)
        // Everything up to the BAT, no payload: the block lies past the end.
        VHDFamilyTest.expectOpenError(try writeFile(Array(bytes.prefix(Int(VHDXTestBuilder.batOffset) + (1 << 20))), dir, "nodata.vhdx"),
                        .truncated, mentions: ["payload block 1"])
    }
}
