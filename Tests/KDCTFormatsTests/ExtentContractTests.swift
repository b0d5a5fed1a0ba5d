import Foundation
import Testing
@testable import KDCTFormats
import KDCTTestSupport

/// The `BlockDevice` contract, checked on every reader, every VMDK subformat and every kind of chain: `extent` with
/// `maxLength: .max` (to the end, never an `offset + maxLength` overflow), offsets at and past the end and a zero
/// `maxLength` refused with `invalidArgument`, reads inside the disk only, and a walk that covers the disk exactly.
@Suite struct ExtentContractTests {
    /// Checks the contract on `device` (named `name` in failures).
    static func checkContract(_ device: any BlockDevice, _ name: String) throws {
        let size = device.virtualSize
        let comment = Comment(rawValue: name)
        if size > 0 {
            for offset in Set([0, size / 2, size - 1]) {
                let extent = try device.extent(at: offset, maxLength: .max)
                #expect(extent.offset == offset && extent.length >= 1 && extent.length <= size - offset, comment)
                let clipped = try device.extent(at: offset, maxLength: .max - offset / 2)
                #expect(clipped == extent, comment)
                let one = try device.extent(at: offset, maxLength: 1)
                #expect(one.offset == offset && one.length == 1 && one.status == extent.status, comment)
            }
            #expect(try device.extent(at: size - 1, maxLength: .max).length == 1, comment)
            _ = expectKDCTError(.invalidArgument) { _ = try device.extent(at: 0, maxLength: 0) }
            // Walking with `.max` covers the disk exactly, each extent starting where the previous one ended.
            var offset: UInt64 = 0
            var walked = 0
            while offset < size, walked < 100_000 {
                let extent = try device.extent(at: offset, maxLength: .max)
                #expect(extent.offset == offset && extent.length >= 1 && extent.length <= size - offset, comment)
                guard extent.length >= 1 else { break }
                offset = extent.end
                walked += 1
            }
            #expect(offset == size || walked == 100_000, comment)
            var last: UInt8 = 0xAA
            try withUnsafeMutableBytes(of: &last) { try device.read(into: $0, at: size - 1) }
        }
        for offset in Set([size, size + 1, size + (1 << 30), UInt64.max - 1, UInt64.max]) where offset >= size {
            for maxLength: UInt64 in [.max, 1] {
                let error = expectKDCTError(.invalidArgument) { _ = try device.extent(at: offset, maxLength: maxLength) }
                #expect(error != nil, comment)
            }
        }
        // Reads: empty at the end is fine; anything past the end, or overflowing, is refused.
        try device.read(into: UnsafeMutableRawBufferPointer(start: nil, count: 0), at: size)
        var two = [UInt8](repeating: 0, count: 2)
        for offset in Set([size, size == 0 ? 0 : size - 1, UInt64.max - 1, UInt64.max]) {
            let error = expectKDCTError(.invalidArgument) { try two.withUnsafeMutableBytes { try device.read(into: $0, at: offset) } }
            #expect(error != nil, comment)
        }
    }

    static func checkFile(_ path: String, options: OpenOptions = OpenOptions()) throws {
        try checkContract(try ImageOpener.open(path, options: options), FilePaths.lastComponent(of: path))
    }

    // MARK: Committed fixtures: every reader

    @Test(arguments: Fixtures.expectedDigests.map(\.0))
    func fixture(_ name: String) throws {
        try Self.checkFile(Fixtures.path(name))
    }

    // MARK: Subformats and chains made by qemu-img

    @Test(arguments: [
        ("raw", ""), ("qcow2", "compat=0.10"), ("qcow2", "extended_l2=on,cluster_size=65536"), ("qcow", ""), ("qed", ""),
        ("vdi", "static=on"), ("vdi", ""), ("vpc", "subformat=fixed"), ("vpc", "subformat=dynamic"),
        ("vhdx", "subformat=fixed"), ("vhdx", "subformat=dynamic"),
        ("vmdk", "subformat=monolithicSparse"), ("vmdk", "subformat=monolithicFlat"),
        ("vmdk", "subformat=twoGbMaxExtentSparse"), ("vmdk", "subformat=twoGbMaxExtentFlat"),
        ("vmdk", "subformat=streamOptimized"),
    ])
    func qemuFormat(_ format: String, _ options: String) throws {
        let dir = try TemporaryDirectory("kdct-contract")
        let raw = try TestPattern.writeRaw(to: dir.file("src.raw"), size: (5 << 20) + 4096)
        let image = dir.file("disk.\(format)")
        try qemuImg(["convert", "-f", "raw", "-O", format] + (options.isEmpty ? [] : ["-o", options]) + [raw, image])
        try Self.checkFile(image)
    }

    @Test(arguments: ["raw", "qcow2", "qed", "vpc", "vhdx"])
    func emptyDisk(_ format: String) throws {
        let dir = try TemporaryDirectory("kdct-contract")
        let image = dir.file("empty.\(format)")
        try qemuImg("create", "-q", "-f", format, image, "0")
        let device = try ImageOpener.open(image, options: OpenOptions(format: ImageFormat(name: format)))
        #expect(device.virtualSize == 0)
        try Self.checkContract(device, image)
    }

    @Test(arguments: ["qcow2", "qed", "qcow", "vmdk"])
    func backingChain(_ format: String) throws {
        // Three layers of different sizes, so runs past the end of a shorter backing file are checked too.
        let dir = try TemporaryDirectory("kdct-contract")
        try TestPattern.writeRaw(to: dir.file("base.raw"), size: 3 << 20)
        try qemuImg("convert", "-f", "raw", "-O", format, dir.file("base.raw"), dir.file("base.\(format)"))
        let create = { (name: String, backing: String, size: String) in
            let result = try runProcess(["sh", "-c", "cd \"$0\" && exec qemu-img create -q -f \"$1\" -b \"$2\" -F \"$1\" \"$3\" \"$4\"",
                                         dir.path, format, backing, name, size])
            #expect(result.status == 0, "\(result.stderr)")
        }
        try create("mid.\(format)", "base.\(format)", "4M")
        try qemuIO(dir.file("mid.\(format)"), format, ["write -P 0x33 1M 64k"])
        try create("top.\(format)", "mid.\(format)", "6M")
        try qemuIO(dir.file("top.\(format)"), format, ["write -P 0x44 2M 4k"])
        let device = try ImageOpener.open(dir.file("top.\(format)"))
        #expect(device is ChainedBlockDevice)
        try Self.checkContract(device, "\(format) chain")
    }

    // MARK: Built from bytes: COWD deltas, custom descriptors, VDI/VHD/VHDX differencing, VHDX logs

    @Test func vmdkCOWDDeltaAndCustomDescriptor() throws {
        let dir = try TemporaryDirectory("kdct-contract")
        try VMDKBytes.write(TestPattern.bytes(offset: 0, length: 2 << 20, kind: "r"), to: dir.file("base-flat.vmdk"))
        try VMDKBytes.write(Array(VMDKBytes.descriptor(createType: "vmfs", extents: ["RW 4096 VMFS \"base-flat.vmdk\" 0"],
                                                        cid: "aaaa0001").utf8), to: dir.file("base.vmdk"))
        try VMDKBytes.write(VMDKBytes.cowd(capacitySectors: 4096, grains: [3: [UInt8](repeating: 7, count: 512)]),
                            to: dir.file("vm-delta.vmdk"))
        try VMDKBytes.write(Array(VMDKBytes.descriptor(createType: "vmfsSparse", extents: ["RW 4096 VMFSSPARSE \"vm-delta.vmdk\""],
                                                        cid: "bbbb0002", parentCID: "aaaa0001", parentHint: "base.vmdk").utf8),
                            to: dir.file("vm.vmdk"))
        try Self.checkFile(dir.file("vm.vmdk"))
        let custom = VMDKBytes.descriptor(createType: "custom", extents: [
            "RW 2048 FLAT \"base-flat.vmdk\" 8", "RW 1024 ZERO", "NOACCESS 512 FLAT \"never-opened.bin\" 0",
        ])
        try VMDKBytes.write(Array(custom.utf8), to: dir.file("custom.vmdk"))
        try Self.checkFile(dir.file("custom.vmdk"))
        try VMDKBytes.write(try VMDKBytes.streamOptimized(capacitySectors: 2047, grains: [0: [1, 2, 3], 15: [4]]),
                            to: dir.file("stream.vmdk"))
        try Self.checkFile(dir.file("stream.vmdk"))
    }

    @Test func vdiDifferencingChain() throws {
        let dir = try TemporaryDirectory("kdct-contract")
        let chain = VDIReaderTests.Chain()
        try chain.base.write(to: dir.file("base.vdi"))
        try chain.mid.write(to: dir.file("mid.vdi"))
        try chain.top.write(to: dir.file("top.vdi"))
        try Self.checkFile(dir.file("top.vdi"))
    }

    @Test func vhdDifferencingDisk() throws {
        let dir = try TemporaryDirectory("kdct-contract")
        let parent = try VHDDifferencingTests.makeParent(in: dir)
        let child = try VHDDifferencingTests.childBuilder(parentID: parent.uniqueID, locators: VHDDifferencingTests.relativeLocators)
            .write(to: dir.file("child.vhd"))
        try Self.checkFile(child)
    }

    @Test func vhdxDifferencingDiskAndReplayedLog() throws {
        let dir = try TemporaryDirectory("kdct-contract")
        let parent = try VHDXBuiltTests.qemuParent(dir, size: 12 << 20)
        let child = try VHDXBuiltTests.child(size: 12 << 20, linkage: parent.guid).write(to: dir.file("child.avhdx"))
        try Self.checkFile(child)
        let logged = try VHDXBuiltTests.loggedDisk().builder.write(to: dir.file("logged.vhdx"))
        try Self.checkFile(logged)
    }

    // MARK: Compressed units read together

    /// Reads that start and end inside compressed clusters and span many of them (fetched in one window by the
    /// driver, each inflated into the buffer or through scratch) match the source byte for byte.
    @Test(arguments: [("qcow2", "cluster_size=4096"), ("qcow2", "compression_type=zstd,cluster_size=4096"),
                      ("qcow", ""), ("vmdk", "subformat=streamOptimized")])
    func compressedReadsAtAnyAlignment(_ format: String, _ options: String) throws {
        let dir = try TemporaryDirectory("kdct-contract")
        let size = (3 << 20) + 1536
        let raw = try TestPattern.writeRaw(to: dir.file("src.raw"), size: UInt64(size))
        let image = dir.file("c.\(format)")
        let result = try runProcess(["qemu-img", "convert", "-c", "-f", "raw", "-O", format] + (options.isEmpty ? [] : ["-o", options])
                                    + [raw, image])
        // qemu 7.2 exits 1 after writing a complete compressed qcow (v1) image (FORMATS.md, "QCOW").
        #expect(result.status == 0 || format == "qcow", "\(result.stderr)")
        let source = [UInt8](try Data(contentsOf: URL(fileURLWithPath: raw)))
        let device = try ImageOpener.open(image)
        #expect(try device.allExtents().contains { $0.compressed })
        for (offset, length) in [(0, size), (1, 4095), (4095, 2), (100, 300_000), (65_535, 1 << 20), (size - 5000, 5000),
                                 (2_000_000, 1), (777_777, 1_234_567)] {
            #expect(try device.readBytes(at: UInt64(offset), count: length) == Array(source[offset..<(offset + length)]),
                    "\(format) \(options) [\(offset), +\(length))")
        }
    }

    // MARK: Real-world images

    @Test func corpusImages() throws {
        guard let (directory, entries) = Corpus.load() else { return }
        var checked = 0
        for entry in entries where entry.expect == "ok" || entry.expect == "ok-after-log-replay"
            || entry.expect.hasPrefix("ok-with-parent:") {
            guard let format = entry.format.flatMap(ImageFormat.init(name:)), ImageOpener.canRead(format) else { continue }
            var options = OpenOptions()
            options.referencePolicy = .any
            try Self.checkFile(directory + "/" + entry.file, options: options)
            checked += 1
        }
        #expect(checked > 20, "corpus entries checked: \(checked)")
    }
}
