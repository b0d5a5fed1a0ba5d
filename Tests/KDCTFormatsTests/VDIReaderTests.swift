import Foundation
import Testing
@testable import KDCTFormats
import KDCTTestSupport

/// The VDI reader against qemu-made images, synthetic VirtualBox-style images and chains, and the corpus.
@Suite struct VDIReaderTests {
    @Test(arguments: ["dynamic", "static"])
    func qemuMadeImagesConvertIdentically(_ kind: String) throws {
        let dir = try TemporaryDirectory()
        let size: UInt64 = 12 << 20 + 3 * 512
        let source = try TestPattern.writeRaw(to: dir.file("src.raw"), size: size)
        let vdi = dir.file("\(kind).vdi")
        try qemuImg("convert", "-f", "raw", "-O", "vdi", "-o", "static=\(kind == "static" ? "on" : "off")", source, vdi)

        let device = try ImageOpener.open(vdi)
        #expect(device.virtualSize == size)
        #expect(device.info.format == .vdi)
        #expect(device.info.subformat == kind)
        #expect(device.info.clusterSize == 1 << 20)
        #expect(device.info.producer == "<<< QEMU VM Virtual Disk Image >>>")
        #expect(device.info.formatSpecific["version"] == .string("1.1"))
        #expect(try GuestDigest.sha256(of: device) == guestSHA256(source, format: .raw))
        let extents = try device.allExtents()
        let data = extents.filter { $0.status == .data }.reduce(0) { $0 + $1.length }
        if kind == "dynamic" {
            #expect(data < size / 2, "qemu leaves zero blocks unallocated; got \(data) data bytes")
            #expect(extents.contains { $0.status == .absent })
        } else {
            #expect(data == size)
            #expect(extents.count == 1, "a static image is one contiguous run: \(extents)")
        }
        try expectConvertsIdentically(vdi, reference: source, referenceFormat: "raw", in: dir)
    }

    @Test func unalignedReadsMatchTheSource() throws {
        let dir = try TemporaryDirectory()
        let size: UInt64 = 5 << 20
        let source = try TestPattern.writeRaw(to: dir.file("src.raw"), size: size)
        let vdi = dir.file("d.vdi")
        try qemuImg("convert", "-f", "raw", "-O", "vdi", source, vdi)
        let device = try ImageOpener.open(vdi)
        let raw = try ImageOpener.open(source, options: OpenOptions(format: .raw))
        for (offset, count) in [(0, 1), (65_000, 3_000), ((1 << 20) - 7, 20), (200_003, 2_500_000), (Int(size) - 9, 9)] {
            #expect(try device.readBytes(at: UInt64(offset), count: count) == raw.readBytes(at: UInt64(offset), count: count),
                    "read of \(count) at \(offset)")
        }
        #expect(throws: KDCTError.self) { try device.readBytes(at: size - 1, count: 2) }
    }

    @Test func emptyHugeImageMapsInOneExtent() throws {
        let dir = try TemporaryDirectory()
        let vdi = dir.file("big.vdi")
        try qemuImg("create", "-q", "-f", "vdi", vdi, "256G")
        let device = try ImageOpener.open(vdi)
        #expect(try device.allExtents() == [Extent(offset: 0, length: 256 << 30, status: .absent)])
    }

    // MARK: Synthetic images (layouts qemu-img does not write)

    /// Deterministic block content.
    static func blockBytes(_ seed: Int, count: Int) -> [UInt8] {
        TestPattern.bytes(offset: UInt64(seed) * 7919, length: count, kind: "r")
    }

    @Test func blockExtraOddBlockSizesAndOldVersions() throws {
        let dir = try TemporaryDirectory()
        for (version, blockSize, extra) in [(UInt32(0x0001_0001), UInt32(64 << 10), UInt32(512)),
                                            (0x0001_0001, 4096, 4096),
                                            (0x0001_0000, 2 << 20, 0),
                                            (0x0000_0002, 512 << 10, 0)] {
            var image = SyntheticVDI(diskSize: 6 << 20 + 1024, blockSize: blockSize)
            image.version = version
            if version == 0x0001_0000 { image.headerSize = 0x180 }
            image.blockExtra = extra
            let blocks = image.count
            for index in stride(from: 0, to: blocks, by: 3) { image.blocks[index] = .data(Self.blockBytes(index, count: Int(blockSize))) }
            image.blocks[1] = .zero
            image.blocks[blocks - 1] = .data(Self.blockBytes(99, count: Int(blockSize)))
            let path = dir.file("v\(version)-\(blockSize)-\(extra).vdi")
            try image.write(to: path)
            var guest = [UInt8](repeating: 0, count: Int(image.diskSize))
            image.apply(to: &guest)
            let raw = dir.file("v\(version)-\(blockSize)-\(extra).raw")
            try writeTestFile(guest, to: raw)

            let device = try ImageOpener.open(path)
            #expect(device.virtualSize == image.diskSize)
            #expect(device.info.clusterSize == UInt64(blockSize))
            #expect(try device.extent(at: UInt64(blockSize), maxLength: 1 << 40).status == .zero)
            // Slots are given in reverse block order, so block 0 has the last one.
            let dataBlocks = image.blocks.values.filter { if case .data = $0 { true } else { false } }.count
            #expect(try device.extent(at: 0, maxLength: 1 << 40).hostOffset
                    == UInt64(image.dataOffset) + UInt64(extra) + UInt64(dataBlocks - 1) * UInt64(blockSize + extra))
            #expect(try GuestDigest.sha256(of: device) == guestSHA256(raw, format: .raw))
            try expectConvertsIdentically(path, reference: raw, referenceFormat: "raw", in: dir)
        }
    }

    @Test func diskSizeNotAMultipleOf512IsRoundedDownAsVirtualBoxDoes() throws {
        let dir = try TemporaryDirectory()
        var image = SyntheticVDI(diskSize: (2 << 20) + 700)
        image.blocks[2] = .data([UInt8](repeating: 0x5A, count: 1 << 20))
        try image.write(to: dir.file("odd.vdi"))
        let device = try ImageOpener.open(dir.file("odd.vdi"))
        #expect(device.virtualSize == (2 << 20) + 512)
        #expect(device.info.notes.contains { $0.contains("rounded down") })
        #expect(try device.readBytes(at: (2 << 20) + 500, count: 12) == [UInt8](repeating: 0x5A, count: 12))
    }

    @Test func blocksPointingPastTheEndOfTheFileAreRefused() throws {
        let dir = try TemporaryDirectory()
        var image = SyntheticVDI(diskSize: 4 << 20)
        image.blocks[0] = .data([1])
        image.rawEntries[3] = 7
        try image.write(to: dir.file("bad.vdi"))
        let error = try #require(throws: KDCTError.self) { try ImageOpener.open(dir.file("bad.vdi")) }
        #expect(error.code == .corrupt)
        #expect(error.field == "block map entry 3")
        #expect(error.file == dir.file("bad.vdi"))
        #expect(!FilePaths.exists(dir.file("out.raw")))
        #expect(throws: KDCTError.self) { try convertImage(dir.file("bad.vdi"), to: dir.file("out.raw"), format: .raw) }
        #expect(!FilePaths.exists(dir.file("out.raw")))
    }

    // MARK: VirtualBox snapshot chains

    /// A three-level chain (base <- mid <- top) with a 64 KiB block size and every kind of block override, and
    /// the flattened disk it must read as.
    struct Chain {
        var base = SyntheticVDI(diskSize: 8 << 20, blockSize: 64 << 10)
        var mid = SyntheticVDI(diskSize: 8 << 20, blockSize: 64 << 10)
        var top = SyntheticVDI(diskSize: 8 << 20, blockSize: 64 << 10)

        init() {
            let size = 64 << 10
            base.fileInfo = "<<< Sun VirtualBox Disk Image >>>\n"
            base.creation = SyntheticVDI.uuid(10); base.modification = SyntheticVDI.uuid(11)
            for index in stride(from: 0, to: 128, by: 2) { base.blocks[index] = .data(blockBytes(index, count: size)) }
            base.blocks[5] = .zero

            mid.imageType = 4
            mid.creation = SyntheticVDI.uuid(20); mid.modification = SyntheticVDI.uuid(21)
            mid.link = base.creation; mid.parentModification = base.modification
            mid.blockExtra = 512
            for index in stride(from: 0, to: 128, by: 5) { mid.blocks[index] = .data(blockBytes(1000 + index, count: size)) }
            mid.blocks[4] = .zero       // hides base data
            mid.blocks[7] = .data(blockBytes(7777, count: 100))  // where base has nothing

            top.imageType = 4
            top.creation = SyntheticVDI.uuid(30); top.modification = SyntheticVDI.uuid(31)
            top.link = mid.creation; top.parentModification = mid.modification
            for index in stride(from: 0, to: 128, by: 7) { top.blocks[index] = .data(blockBytes(2000 + index, count: size)) }
            top.blocks[10] = .zero      // hides mid data (10 is a multiple of 5)
            top.blocks[127] = .data(blockBytes(3000, count: size))
        }

        /// The flattened guest disk.
        var flattened: [UInt8] {
            var guest = [UInt8](repeating: 0, count: Int(base.diskSize))
            base.apply(to: &guest)
            mid.apply(to: &guest)
            top.apply(to: &guest)
            return guest
        }
    }

    @Test func threeLevelSnapshotChainFlattens() throws {
        let dir = try TemporaryDirectory()
        let chain = Chain()
        // VirtualBox's layout: the base disk in the VM folder, snapshots in Snapshots/ below it.
        try FileManager.default.createDirectory(atPath: dir.file("Snapshots"), withIntermediateDirectories: false)
        try chain.base.write(to: dir.file("disk.vdi"))
        try chain.mid.write(to: dir.file("Snapshots/{mid}.vdi"))
        try chain.top.write(to: dir.file("Snapshots/{top}.vdi"))
        let raw = dir.file("expected.raw")
        try writeTestFile(chain.flattened, to: raw)

        let top = dir.file("Snapshots/{top}.vdi")
        let device = try ImageOpener.open(top)
        #expect(device.virtualSize == 8 << 20)
        #expect(device.info.subformat == "differencing")
        #expect(device.info.backingFilename == dir.file("Snapshots/{mid}.vdi"))
        #expect(device.info.references.first?.opened == true)
        #expect(device.info.backingChain.count == 2)
        #expect(device.info.backingChain.last?.subformat == "dynamic")
        #expect(device.info.backingChain.last?.producer == "<<< Sun VirtualBox Disk Image >>>")
        #expect(try GuestDigest.sha256(of: device) == guestSHA256(raw, format: .raw))
        // Block 10 is zero in the top even though mid has data there; block 4 is zero in mid over base data.
        #expect(try device.extent(at: 10 * 65536, maxLength: 65536) == Extent(offset: 10 * 65536, length: 65536, status: .zero))
        #expect(try device.extent(at: 4 * 65536, maxLength: 65536).depth == 1)
        #expect(try device.extent(at: 2 * 65536, maxLength: 65536).depth == 2)
        try expectConvertsIdentically(top, reference: raw, referenceFormat: "raw", in: dir)

        // info reports the parent by UUID without opening it.
        let info = try ImageOpener.inspect(top)
        #expect(info.references == [ImageReference(kind: .parent, name: "creation UUID \(VDIUUID(bytes: chain.mid.creation))")])
        #expect(info.backingChain.isEmpty)
        #expect(info.formatSpecific["link-uuid"] == .string(VDIUUID(bytes: chain.mid.creation).description))
    }

    @Test func parentModifiedAfterTheSnapshotIsRefused() throws {
        let dir = try TemporaryDirectory()
        var chain = Chain()
        chain.mid.parentModification = SyntheticVDI.uuid(99)
        try chain.base.write(to: dir.file("base.vdi"))
        try chain.mid.write(to: dir.file("mid.vdi"))
        try chain.top.write(to: dir.file("top.vdi"))
        let error = try #require(throws: KDCTError.self) { try ImageOpener.open(dir.file("top.vdi")) }
        #expect(error.code == .corrupt)
        #expect(error.message.contains(VDIUUID(bytes: SyntheticVDI.uuid(11)).description), "names the parent's UUID: \(error)")
        #expect(error.message.contains(VDIUUID(bytes: SyntheticVDI.uuid(99)).description), "names the expected UUID: \(error)")
        #expect(error.message.contains("base.vdi"))
        #expect(throws: KDCTError.self) { try convertImage(dir.file("top.vdi"), to: dir.file("o.raw"), format: .raw) }
        #expect(!FilePaths.exists(dir.file("o.raw")))
    }

    @Test func parentFilesFindParentsElsewhere() throws {
        let dir = try TemporaryDirectory()
        let chain = Chain()
        for sub in ["a/x", "b", "c"] {
            try FileManager.default.createDirectory(atPath: dir.file(sub), withIntermediateDirectories: true)
        }
        try chain.base.write(to: dir.file("b/base.vdi"))
        try chain.mid.write(to: dir.file("c/mid.vdi"))
        try chain.top.write(to: dir.file("a/x/top.vdi"))
        let top = dir.file("a/x/top.vdi")

        let missing = try #require(throws: KDCTError.self) { try ImageOpener.open(top) }
        #expect(missing.code == .notFound)
        #expect(missing.message.contains(VDIUUID(bytes: chain.mid.creation).description))
        #expect(missing.message.contains("--parent"))

        var options = OpenOptions()
        options.parentFiles = [dir.file("b/base.vdi"), dir.file("c/mid.vdi")]
        let device = try ImageOpener.open(top, options: options)
        let raw = dir.file("expected.raw")
        try writeTestFile(chain.flattened, to: raw)
        #expect(try GuestDigest.sha256(of: device) == guestSHA256(raw, format: .raw))
        try expectConvertsIdentically(top, reference: raw, referenceFormat: "raw", in: dir, options: options)

        // The middle found by --parent, the base beside it would not be: only the given files and the
        // directories of each image are searched.
        options.parentFiles = [dir.file("c/mid.vdi")]
        let noBase = try #require(throws: KDCTError.self) { try ImageOpener.open(top, options: options) }
        #expect(noBase.code == .notFound)
        #expect(noBase.message.contains(VDIUUID(bytes: chain.base.creation).description))

        options.parentFiles = [dir.file("c/nothing.vdi")]
        #expect(throws: KDCTError.self) { try ImageOpener.open(top, options: options) }
    }

    @Test func symlinksLeavingTheSearchedDirectoryAreNotFollowedByDefault() throws {
        let dir = try TemporaryDirectory()
        let chain = Chain()
        for sub in ["vm/Snapshots", "elsewhere"] {
            try FileManager.default.createDirectory(atPath: dir.file(sub), withIntermediateDirectories: true)
        }
        try chain.base.write(to: dir.file("elsewhere/base.vdi"))
        try FileManager.default.createSymbolicLink(atPath: dir.file("vm/base.vdi"), withDestinationPath: dir.file("elsewhere/base.vdi"))
        try chain.mid.write(to: dir.file("vm/Snapshots/mid.vdi"))
        let error = try #require(throws: KDCTError.self) { try ImageOpener.open(dir.file("vm/Snapshots/mid.vdi")) }
        #expect(error.code == .notFound)
        var options = OpenOptions()
        options.referencePolicy = .any
        let device = try ImageOpener.open(dir.file("vm/Snapshots/mid.vdi"), options: options)
        #expect(device.info.backingChain.count == 1)
    }

    @Test func strictModeSearchesNothing() throws {
        let dir = try TemporaryDirectory()
        let chain = Chain()
        try chain.base.write(to: dir.file("base.vdi"))
        try chain.mid.write(to: dir.file("mid.vdi"))
        for policy in [true, false] {
            var options = OpenOptions()
            if policy { options.referencePolicy = .none } else { options.untrusted = true }
            let error = try #require(throws: KDCTError.self) { try ImageOpener.open(dir.file("mid.vdi"), options: options) }
            #expect(error.code == .referenceRefused)
            #expect(error.message.contains("no parent was searched"))
        }
    }

    @Test func chainLoopsAreRefused() throws {
        let dir = try TemporaryDirectory()
        // Two differencing images that name each other.
        var a = SyntheticVDI(diskSize: 1 << 20)
        var b = SyntheticVDI(diskSize: 1 << 20)
        a.imageType = 4; b.imageType = 4
        a.creation = SyntheticVDI.uuid(40); a.modification = SyntheticVDI.uuid(41)
        b.creation = SyntheticVDI.uuid(50); b.modification = SyntheticVDI.uuid(51)
        a.link = b.creation; a.parentModification = b.modification
        b.link = a.creation; b.parentModification = a.modification
        try a.write(to: dir.file("a.vdi"))
        try b.write(to: dir.file("b.vdi"))
        let error = try #require(throws: KDCTError.self) { try ImageOpener.open(dir.file("a.vdi")) }
        #expect(error.code == .notFound || error.code == .corrupt, "\(error)")
    }

    // MARK: Corpus

    @Test func corpusImagesMeetTheirManifest() throws {
        guard let corpus = Corpus.load() else { return }
        let entries = corpus.entries.filter { $0.format == "vdi" }
        #expect(entries.count >= 4)
        for entry in entries {
            let path = corpus.directory + "/" + entry.file
            switch entry.expect {
            case "ok":
                let device = try ImageOpener.open(path)
                #expect(device.virtualSize == entry.virtual_size, "\(entry.file)")
                #expect(try GuestDigest.sha256(of: device) == entry.sha256, "\(entry.file)")
            case let expect where expect.hasPrefix("ok-with-parent:"):
                let parentName = String(expect.dropFirst("ok-with-parent:".count))
                let parentPath = FilePaths.directory(of: path) + "/" + parentName
                let device = try ImageOpener.open(path)
                #expect(device.virtualSize == entry.virtual_size, "\(entry.file)")
                #expect(device.info.subformat == "differencing")
                #expect(device.info.producer == "<<< Oracle VM VirtualBox Disk Image >>>")
                #expect(FilePaths.canonical(device.info.backingFilename ?? "") == FilePaths.canonical(parentPath))
                #expect(try GuestDigest.sha256(of: device) == entry.sha256, "\(entry.file)")
                // qemu refuses the snapshot but reads its parent: the flattened snapshot must equal it.
                let dir = try TemporaryDirectory()
                try expectConvertsIdentically(path, reference: parentPath, referenceFormat: "vdi", in: dir)
                // With the parent given explicitly too.
                var options = OpenOptions()
                options.parentFiles = [parentPath]
                #expect(try GuestDigest.sha256(of: ImageOpener.open(path, options: options)) == entry.sha256)
            default:
                Issue.record("unexpected manifest expectation \(entry.expect) for \(entry.file)")
            }
        }
    }
}
