import Foundation
import Testing
@testable import KDCTFormats
import KDCTTestSupport

/// Whole VMDK disks built from bytes: descriptors of every extent kind, COWD deltas, streams with the grain
/// directory in the footer, and hostile variants (each must end in a clear KDCTError, never in zeros).
@Suite struct VMDKImageTests {
    /// Opens `path` and hashes its whole guest; the error it throws, if any.
    static func openAndRead(_ path: String, options: OpenOptions = OpenOptions()) -> KDCTError? {
        do {
            let device = try ImageOpener.open(path, options: options)
            _ = try GuestDigest.sha256(of: device)
            return nil
        } catch let error as KDCTError {
            return error
        } catch {
            Issue.record("non-KDCTError \(error)")
            return nil
        }
    }

    static func pattern(_ seed: UInt64, _ count: Int) -> [UInt8] { TestPattern.bytes(offset: seed, length: count, kind: "r") }

    // MARK: Descriptors and extent kinds

    @Test func customDescriptorMixesEveryExtentKind() throws {
        let dir = try TemporaryDirectory("kdct-vmdk")
        // Pieces: 1 MiB flat at sector offset 8 of its file, 512 KiB ZERO, 256 KiB NOACCESS, a 2 MiB qemu sparse file.
        let flatData = Self.pattern(7, 1 << 20)
        try VMDKBytes.write([UInt8](repeating: 0xEE, count: 4096) + flatData, to: dir.file("part-flat.bin"))
        let sparseRaw = try TestPattern.writeRaw(to: dir.file("sparse-src.raw"), size: 2 << 20)
        try qemuImg("convert", "-f", "raw", "-O", "vmdk", sparseRaw, dir.file("part-sparse.vmdk"))
        let text = VMDKBytes.descriptor(createType: "custom", extents: [
            "RW 2048 FLAT \"part-flat.bin\" 8",
            "RW 1024 ZERO",
            "NOACCESS 512 FLAT \"never-opened.bin\" 0",
            "RDONLY 4096 SPARSE \"part-sparse.vmdk\"",
        ])
        try VMDKBytes.write(Array(text.utf8), to: dir.file("custom.vmdk"))
        let expected = flatData + [UInt8](repeating: 0, count: (512 + 256) << 10)
            + [UInt8](try Data(contentsOf: URL(fileURLWithPath: sparseRaw)))
        try VMDKBytes.write(expected, to: dir.file("expected.raw"))

        let device = try ImageOpener.open(dir.file("custom.vmdk"))
        #expect(device.virtualSize == UInt64(expected.count))
        #expect(try device.readBytes(at: 0, count: expected.count) == expected)
        #expect(try device.extent(at: 1 << 20, maxLength: 1 << 30) == Extent(offset: 1 << 20, length: 768 << 10, status: .zero))
        #expect(device.info.references.map(\.name) == ["part-flat.bin", "never-opened.bin", "part-sparse.vmdk"])
        #expect(device.info.references.map(\.opened) == [true, false, true])
        // Every data extent names the file its host offset is in: the flat piece starts 4 KiB into part-flat.bin.
        let extents = try device.allExtents()
        #expect(extents.first == Extent(offset: 0, length: 1 << 20, status: .data, hostOffset: 4096, file: dir.file("part-flat.bin")))
        #expect(extents.filter { $0.status == .data }.allSatisfy {
            $0.hostOffset != nil && [dir.file("part-flat.bin"), dir.file("part-sparse.vmdk")].contains($0.file)
        })
        #expect(extents.contains { $0.file == dir.file("part-sparse.vmdk") })
        try VMDKQemuTests.convertAndCompareToRaw(dir.file("custom.vmdk"), expected: dir.file("expected.raw"), in: dir)
    }

    @Test func nonASCIIExtentNamesResolve() throws {
        let dir = try TemporaryDirectory("kdct-vmdk")
        // qemu writes the UTF-8 name as is.
        try qemuImg("create", "-q", "-f", "vmdk", "-o", "subformat=monolithicFlat", dir.file("Disk ü.vmdk"), "1M")
        #expect(Self.openAndRead(dir.file("Disk ü.vmdk")) == nil)
        // An old windows-1252 descriptor (0xFC = ü, 0x80 = €) naming the file stored under its UTF-8 name.
        try VMDKBytes.write([UInt8](repeating: 7, count: 4096), to: dir.file("Lö€-flat.vmdk"))
        var text = Array("# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\nRW 8 FLAT \"L".utf8)
        text += [0xF6, 0x80] + Array("-flat.vmdk\" 0\n".utf8)
        try VMDKBytes.write(text, to: dir.file("legacy.vmdk"))
        let device = try ImageOpener.open(dir.file("legacy.vmdk"))
        #expect(device.info.references.first?.name == "Lö€-flat.vmdk")
        #expect(try device.readBytes(at: 0, count: 4) == [7, 7, 7, 7])
    }

    @Test func flatExtentShorterThanDeclaredIsTruncated() throws {
        let dir = try TemporaryDirectory("kdct-vmdk")
        try VMDKBytes.write([UInt8](repeating: 1, count: 1000 * 512), to: dir.file("d-flat.vmdk"))
        let text = VMDKBytes.descriptor(createType: "monolithicFlat", extents: ["RW 2048 FLAT \"d-flat.vmdk\" 0"])
        try VMDKBytes.write(Array(text.utf8), to: dir.file("d.vmdk"))
        let error = Self.openAndRead(dir.file("d.vmdk"))
        #expect(error?.code == .truncated && error?.message.contains("d-flat.vmdk") == true, "\(String(describing: error))")
    }

    @Test func hugeFlatOffsetIsAnErrorAndInfoStillWorks() throws {
        let dir = try TemporaryDirectory("kdct-vmdk")
        try VMDKBytes.write([UInt8](repeating: 1, count: 4096), to: dir.file("f.bin"))
        let text = VMDKBytes.descriptor(createType: "monolithicFlat", extents: ["RW 8 FLAT \"f.bin\" 18446744073709551615"])
        try VMDKBytes.write(Array(text.utf8), to: dir.file("d.vmdk"))
        let error = Self.openAndRead(dir.file("d.vmdk"))
        #expect(error?.code == .corrupt && error?.field == "extent line 7", "\(String(describing: error))")
        let info = try ImageOpener.inspect(dir.file("d.vmdk"))
        guard case let .array(extents)? = info.formatSpecific["extents"] else { Issue.record("no extents"); return }
        #expect(extents.first?["offset-sectors"] == .unsigned(UInt64.max))
    }

    @Test func unknownAndDeviceCreateTypesAreRefused() throws {
        let dir = try TemporaryDirectory("kdct-vmdk")
        for (createType, kind) in [("fancyNewType", KDCTError.Code.unsupported), ("fullDevice", .unsupported)] {
            let text = VMDKBytes.descriptor(createType: createType, extents: ["RW 2048 ZERO"])
            try VMDKBytes.write(Array(text.utf8), to: dir.file("\(createType).vmdk"))
            let error = Self.openAndRead(dir.file("\(createType).vmdk"))
            #expect(error?.code == kind && error?.field == "createType", "\(createType): \(String(describing: error))")
        }
        let rdm = VMDKBytes.descriptor(createType: "custom", extents: ["RW 2048 VMFSRDM \"lun-rdm.vmdk\" 0"])
        try VMDKBytes.write(Array(rdm.utf8), to: dir.file("rdm.vmdk"))
        #expect(Self.openAndRead(dir.file("rdm.vmdk"))?.code == .unsupported)
    }

    @Test func sparseExtentSmallerThanItsDescriptorLineIsCorrupt() throws {
        let dir = try TemporaryDirectory("kdct-vmdk")
        try VMDKBytes.write(VMDKBytes.monolithicSparse(capacitySectors: 2048, grains: [:]), to: dir.file("s-s001.vmdk"))
        let text = VMDKBytes.descriptor(createType: "twoGbMaxExtentSparse", extents: ["RW 4096 SPARSE \"s-s001.vmdk\""])
        try VMDKBytes.write(Array(text.utf8), to: dir.file("s.vmdk"))
        let error = Self.openAndRead(dir.file("s.vmdk"))
        #expect(error?.code == .corrupt && error?.field == "capacity", "\(String(describing: error))")
        #expect(error?.file?.hasSuffix("s-s001.vmdk") == true)
    }

    @Test func extentsWithoutDescriptorAreRefusedOnTheirOwn() throws {
        let dir = try TemporaryDirectory("kdct-vmdk")
        // KDMV with no descriptor at all (VMware's split pieces).
        var bare = VMDKBytes.monolithicSparse(capacitySectors: 2048, grains: [0: [1]])
        bare.replaceSubrange(0..<512, with: VMDKBytes.sparseHeader(capacity: 2048, descriptorOffset: 0, descriptorSize: 0, gd: 21))
        try VMDKBytes.write(bare, to: dir.file("disk-s001.vmdk"))
        try VMDKBytes.write(Array(VMDKBytes.descriptor(createType: "twoGbMaxExtentSparse",
                                                        extents: ["RW 2048 SPARSE \"disk-s001.vmdk\""]).utf8),
                            to: dir.file("disk.vmdk"))
        let error = Self.openAndRead(dir.file("disk-s001.vmdk"))
        #expect(error?.code == .invalidFormat && error?.message.contains("extent without descriptor") == true)
        #expect(error?.message.contains("disk.vmdk") == true, "names the likely descriptor: \(String(describing: error))")
        #expect(Self.openAndRead(dir.file("disk.vmdk")) == nil, "the same file opens through its descriptor")
        // KDMV whose descriptor area is reserved but blank (qemu's split pieces).
        var blank = bare
        blank.replaceSubrange(0..<512, with: VMDKBytes.sparseHeader(capacity: 2048, gd: 21))
        blank.replaceSubrange(512..<(21 * 512), with: [UInt8](repeating: 0, count: 20 * 512))
        try VMDKBytes.write(blank, to: dir.file("blank.vmdk"))
        #expect(Self.openAndRead(dir.file("blank.vmdk"))?.message.contains("extent without descriptor") == true)
        // COWD on its own.
        try VMDKBytes.write(VMDKBytes.cowd(capacitySectors: 4096, grains: [:]), to: dir.file("x-delta.vmdk"))
        let cowd = Self.openAndRead(dir.file("x-delta.vmdk"))
        #expect(cowd?.code == .invalidFormat && cowd?.message.contains("COWD") == true)
    }

    // MARK: Hosted sparse from bytes

    @Test func syntheticMonolithicSparseReadsGrainsAndZeroedEntries() throws {
        let dir = try TemporaryDirectory("kdct-vmdk")
        let a = Self.pattern(1, 65536)
        let b = Self.pattern(2, 65536)
        // flags 7: zeroed-grain entries enabled; grain 5 is GTE 1.
        let bytes = VMDKBytes.monolithicSparse(capacitySectors: 2048, grains: [0: a, 1: b, 3: a], gteOverride: [5: 1],
                                               flags: 7, version: 2)
        try VMDKBytes.write(bytes, to: dir.file("x.vmdk"))
        let device = try ImageOpener.open(dir.file("x.vmdk"))
        #expect(try device.readBytes(at: 0, count: 131072) == a + b)
        #expect(try device.readBytes(at: 3 * 65536 + 100, count: 1000) == Array(a[100..<1100]))
        let extents = try device.allExtents()
        #expect(extents == [
            Extent(offset: 0, length: 131072, status: .data, hostOffset: 128 * 512, file: dir.file("x.vmdk")),
            Extent(offset: 131072, length: 65536, status: .absent),
            Extent(offset: 196608, length: 65536, status: .data, hostOffset: 384 * 512, file: dir.file("x.vmdk")),
            Extent(offset: 262144, length: 65536, status: .absent),
            Extent(offset: 327680, length: 65536, status: .zero),
            Extent(offset: 393216, length: (2048 * 512) - 393216, status: .absent),
        ])
        #expect(device.info.subformat == "monolithicSparse" && device.info.clusterSize == 65536)
    }

    @Test func grainPointersPastTheEndAreErrorsNamingTheEntry() throws {
        let dir = try TemporaryDirectory("kdct-vmdk")
        let bytes = VMDKBytes.monolithicSparse(capacitySectors: 2048, grains: [0: [1, 2, 3]], gteOverride: [3: 100_000])
        try VMDKBytes.write(bytes, to: dir.file("x.vmdk"))
        let device = try ImageOpener.open(dir.file("x.vmdk"))
        let readError = #expect(throws: KDCTError.self) { try device.readBytes(at: 3 * 65536, count: 512) }
        #expect(readError?.code == .corrupt)
        #expect(readError?.message.contains("grain table 0 entry 3 (guest offset 196608)") == true, "\(String(describing: readError))")
        #expect(readError?.message.contains("past the end") == true)
        let mapError = #expect(throws: KDCTError.self) { try device.allExtents() }
        #expect(mapError?.message.contains("entry 3") == true)
        // Grains before it still read.
        #expect(try device.readBytes(at: 0, count: 3) == [1, 2, 3])
    }

    @Test func zeroedGrainEntryWithoutTheFlagIsCorrupt() throws {
        let dir = try TemporaryDirectory("kdct-vmdk")
        let bytes = VMDKBytes.monolithicSparse(capacitySectors: 2048, grains: [:], gteOverride: [2: 1], flags: 3)
        try VMDKBytes.write(bytes, to: dir.file("x.vmdk"))
        let error = Self.openAndRead(dir.file("x.vmdk"))
        #expect(error?.code == .corrupt && error?.message.contains("entry 2") == true, "\(String(describing: error))")
    }

    @Test func grainDirectoryEntryPastTheEndIsCorrupt() throws {
        let dir = try TemporaryDirectory("kdct-vmdk")
        var bytes = VMDKBytes.monolithicSparse(capacitySectors: 2048, grains: [:])
        bytes.replaceSubrange((21 * 512)..<(21 * 512 + 4), with: [0xFF, 0xFF, 0xFF, 0x0F])
        try VMDKBytes.write(bytes, to: dir.file("x.vmdk"))
        let error = Self.openAndRead(dir.file("x.vmdk"))
        #expect(error?.code == .corrupt && error?.field == "grain directory entry 0", "\(String(describing: error))")
    }

    @Test func embeddedDescriptorLimitsAndBounds() throws {
        let dir = try TemporaryDirectory("kdct-vmdk")
        var huge = VMDKBytes.monolithicSparse(capacitySectors: 2048, grains: [:])
        huge.replaceSubrange(0..<512, with: VMDKBytes.sparseHeader(capacity: 2048, descriptorSize: 1 << 40, gd: 21))
        try VMDKBytes.write(huge, to: dir.file("huge.vmdk"))
        // Larger than the file: corruption, checked before the size limit.
        #expect(Self.openAndRead(dir.file("huge.vmdk"))?.code == .corrupt)
        // Inside the file but above the 1 MiB descriptor limit.
        var large = VMDKBytes.monolithicSparse(capacitySectors: 2048, grains: [:])
        large.replaceSubrange(0..<512, with: VMDKBytes.sparseHeader(capacity: 2048, descriptorSize: 4096, gd: 21))
        try VMDKBytes.write(large, to: dir.file("large.vmdk"))
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: dir.file("large.vmdk")))
        try handle.truncate(atOffset: 8 << 20)
        try handle.close()
        #expect(Self.openAndRead(dir.file("large.vmdk"))?.code == .limitExceeded)
        var outside = huge
        outside.replaceSubrange(0..<512, with: VMDKBytes.sparseHeader(capacity: 2048, descriptorOffset: 1 << 30, gd: 21))
        try VMDKBytes.write(outside, to: dir.file("outside.vmdk"))
        let error = Self.openAndRead(dir.file("outside.vmdk"))
        #expect(error?.code == .corrupt && error?.field == "descriptorOffset")
    }

    @Test func truncatedSparseFilesNeverReadAsZeros() throws {
        let dir = try TemporaryDirectory("kdct-vmdk")
        let source = try TestPattern.writeRaw(to: dir.file("src.raw"), size: 4 << 20)
        try qemuImg("convert", "-f", "raw", "-O", "vmdk", source, dir.file("full.vmdk"))
        let full = [UInt8](try Data(contentsOf: URL(fileURLWithPath: dir.file("full.vmdk"))))
        for cut in [100, 600, 11_000, 40_000, full.count / 2, full.count - 1000] {
            let path = dir.file("cut-\(cut).vmdk")
            try VMDKBytes.write(Array(full.prefix(cut)), to: path)
            let error = Self.openAndRead(path)
            #expect(error != nil, "a file cut at \(cut) bytes must not read")
            #expect([.truncated, .corrupt].contains(error?.code), "cut at \(cut): \(String(describing: error))")
        }
    }

    // MARK: streamOptimized from bytes

    @Test func streamWithFooterGrainDirectoryReads() throws {
        let dir = try TemporaryDirectory("kdct-vmdk")
        let a = Self.pattern(3, 65536)
        let b = Array("short grain".utf8)
        try VMDKBytes.write(try VMDKBytes.streamOptimized(capacitySectors: 2048, grains: [0: a, 9: b]), to: dir.file("s.vmdk"))
        let device = try ImageOpener.open(dir.file("s.vmdk"))
        #expect(try device.readBytes(at: 0, count: 65536) == a)
        #expect(try device.readBytes(at: 9 * 65536, count: b.count) == b)
        #expect(try device.readBytes(at: 9 * 65536 + 1000, count: 10) == [UInt8](repeating: 0, count: 10))
        #expect(try device.extent(at: 0, maxLength: 1 << 30) == Extent(offset: 0, length: 65536, status: .data, compressed: true,
                                                                                  file: dir.file("s.vmdk")))
        guard case let .array(extents)? = device.info.formatSpecific["extents"] else { return }
        #expect(extents.first?["grain-directory-in-footer"] == .bool(true))
    }

    @Test func damagedStreamsAreClearErrors() throws {
        let dir = try TemporaryDirectory("kdct-vmdk")
        let good = try VMDKBytes.streamOptimized(capacitySectors: 2048, grains: [0: Self.pattern(4, 65536), 1: [9, 9]])
        let grain0 = 128 * 512  // first grain marker
        var cases: [(String, [UInt8], KDCTError.Code, String)] = []
        var footerMarker = good
        footerMarker[good.count - 1536 + 12] = 7
        cases.append(("footer marker type", footerMarker, .corrupt, "damaged streamOptimized footer"))
        var footerMagic = good
        footerMagic[good.count - 1024] = 0
        cases.append(("footer magic", footerMagic, .corrupt, "damaged streamOptimized footer"))
        cases.append(("cut short", Array(good.prefix(good.count - 700)), .truncated, "end-of-stream"))
        cases.append(("cut mid-grain", Array(good.prefix(grain0 + 3000)), .truncated, "end-of-stream"))
        var lba = good
        lba[grain0] = 5
        cases.append(("marker lba", lba, .corrupt, "grain marker"))
        var size = good
        size.replaceSubrange((grain0 + 8)..<(grain0 + 12), with: [0xFF, 0xFF, 0xFF, 0x7F])
        cases.append(("marker size", size, .corrupt, "declares"))
        var sizePastEnd = good
        sizePastEnd.replaceSubrange((grain0 + 8)..<(grain0 + 12), with: [0x00, 0xFF, 0x01, 0x00])
        cases.append(("marker size past end", sizePastEnd, .corrupt, "past the end"))
        var data = good
        for i in (grain0 + 40)..<(grain0 + 60) { data[i] ^= 0x5A }
        cases.append(("compressed data", data, .corrupt, "does not inflate"))
        for (label, bytes, kind, fragment) in cases {
            let path = dir.file("bad.vmdk")
            try? FileManager.default.removeItem(atPath: path)
            try VMDKBytes.write(bytes, to: path)
            let error = Self.openAndRead(path)
            #expect(error?.code == kind, "\(label): \(String(describing: error))")
            #expect(error?.message.contains(fragment) == true, "\(label): \(String(describing: error))")
        }
    }

    // MARK: COWD (vmfsSparse) deltas

    @Test func vmfsSparseDeltaOverFlatBase() throws {
        let dir = try TemporaryDirectory("kdct-vmdk")
        let baseData = Self.pattern(11, 2 << 20)
        try VMDKBytes.write(baseData, to: dir.file("base-flat.vmdk"))
        try VMDKBytes.write(Array(VMDKBytes.descriptor(createType: "vmfs", extents: ["RW 4096 VMFS \"base-flat.vmdk\" 0"],
                                                        cid: "aaaa0001").utf8), to: dir.file("base.vmdk"))
        let delta1 = Self.pattern(12, 512)
        let delta2 = Self.pattern(13, 512)
        try VMDKBytes.write(VMDKBytes.cowd(capacitySectors: 4096, grains: [3: delta1, 4095: delta2]), to: dir.file("vm-delta.vmdk"))
        try VMDKBytes.write(Array(VMDKBytes.descriptor(createType: "vmfsSparse", extents: ["RW 4096 VMFSSPARSE \"vm-delta.vmdk\""],
                                                        cid: "bbbb0002", parentCID: "aaaa0001", parentHint: "base.vmdk").utf8),
                            to: dir.file("vm.vmdk"))
        var expected = baseData
        expected.replaceSubrange((3 * 512)..<(4 * 512), with: delta1)
        expected.replaceSubrange((4095 * 512)..<(4096 * 512), with: delta2)
        let device = try ImageOpener.open(dir.file("vm.vmdk"))
        #expect(device.info.subformat == "vmfsSparse" && device.info.producer?.hasPrefix("VMware ESXi") == true)
        #expect(try device.readBytes(at: 0, count: expected.count) == expected)
        // Grain 3 is the first grain after the 4 KiB + 16 KiB metadata of the delta's extent file.
        #expect(try device.extent(at: 3 * 512, maxLength: 1 << 30) == Extent(offset: 1536, length: 512, status: .data, hostOffset: 40 * 512,
                                                                              file: dir.file("vm-delta.vmdk")))
        #expect(try device.extent(at: 0, maxLength: 1 << 30).depth == 1)
        try VMDKBytes.write(expected, to: dir.file("expected.raw"))
        try VMDKQemuTests.convertAndCompareToRaw(dir.file("vm.vmdk"), expected: dir.file("expected.raw"), in: dir)

        // A COWD grain pointer past the end of the file.
        try VMDKBytes.write(VMDKBytes.cowd(capacitySectors: 4096, grains: [:], gteOverride: [7: 1 << 30]), to: dir.file("vm-delta.vmdk"))
        let error = Self.openAndRead(dir.file("vm.vmdk"))
        #expect(error?.code == .corrupt && error?.message.contains("grain table 0 entry 7 (guest offset 3584)") == true,
                "\(String(describing: error))")
    }

    // MARK: References and chains

    @Test(arguments: ["/etc/hostname", "../outside.vmdk", "sub/../../outside.vmdk", "json:{'file.filename':'/etc/hostname'}",
                      "nbd:localhost:10809", "http://example.com/x.vmdk"])
    func hostileExtentNamesAreRefused(name: String) throws {
        let dir = try TemporaryDirectory("kdct-vmdk")
        let text = VMDKBytes.descriptor(createType: "monolithicFlat", extents: ["RW 8 FLAT \"\(name)\" 0"])
        try VMDKBytes.write(Array(text.utf8), to: dir.file("d.vmdk"))
        let error = Self.openAndRead(dir.file("d.vmdk"))
        #expect(error?.code == .referenceRefused, "\(name): \(String(describing: error))")
        #expect(error?.message.contains(name.prefix(10)) == true, "\(name): \(String(describing: error))")
    }

    @Test(arguments: ["/tmp/base.vmdk", "../base.vmdk", "nbd:localhost:10809", "json:{}"])
    func hostileParentNamesAreRefused(name: String) throws {
        let dir = try TemporaryDirectory("kdct-vmdk")
        let bytes = VMDKBytes.monolithicSparse(capacitySectors: 2048, grains: [:], parentHint: name, parentCID: "12345678")
        try VMDKBytes.write(bytes, to: dir.file("child.vmdk"))
        let error = Self.openAndRead(dir.file("child.vmdk"))
        #expect(error?.code == .referenceRefused, "\(name): \(String(describing: error))")
        let info = try ImageOpener.inspect(dir.file("child.vmdk"))
        #expect(info.backingFilename == name)
    }

    @Test func parentLoopsAndMissingHintsAreErrors() throws {
        let dir = try TemporaryDirectory("kdct-vmdk")
        let selfParent = VMDKBytes.monolithicSparse(capacitySectors: 2048, grains: [:], parentHint: "self.vmdk",
                                                    parentCID: "12345678", cid: "12345678")
        try VMDKBytes.write(selfParent, to: dir.file("self.vmdk"))
        let loop = Self.openAndRead(dir.file("self.vmdk"))
        #expect(loop?.code == .corrupt && loop?.message.contains("loops") == true, "\(String(describing: loop))")
        let orphan = VMDKBytes.monolithicSparse(capacitySectors: 2048, grains: [:], parentCID: "abcdef01")
        try VMDKBytes.write(orphan, to: dir.file("orphan.vmdk"))
        let missing = Self.openAndRead(dir.file("orphan.vmdk"))
        #expect(missing?.code == .corrupt && missing?.field == "parentFileNameHint")
        // A descriptor naming itself as a sparse extent.
        try VMDKBytes.write(Array(VMDKBytes.descriptor(createType: "twoGbMaxExtentSparse", extents: ["RW 8 SPARSE \"me.vmdk\""]).utf8),
                            to: dir.file("me.vmdk"))
        #expect(Self.openAndRead(dir.file("me.vmdk"))?.code == .corrupt)
    }

    @Test func descriptorSizeAndExtentCountLimitsApplyToFiles() throws {
        let dir = try TemporaryDirectory("kdct-vmdk")
        let many = "# Disk DescriptorFile\nversion=1\ncreateType=\"custom\"\n" + String(repeating: "RW 1 ZERO\n", count: 100_000)
        try VMDKBytes.write(Array(many.utf8), to: dir.file("many.vmdk"))
        let count = Self.openAndRead(dir.file("many.vmdk"))
        #expect(count?.code == .limitExceeded && count?.field == "extents", "\(String(describing: count))")
        let big = "# Disk DescriptorFile\nversion=1\ncreateType=\"monolithicFlat\"\n"
            + String(repeating: "# padding padding padding padding padding padding padding\n", count: 40_000)
        try VMDKBytes.write(Array(big.utf8), to: dir.file("big.vmdk"))
        let size = Self.openAndRead(dir.file("big.vmdk"))
        #expect(size?.code == .limitExceeded && size?.field == "descriptor size", "\(String(describing: size))")
        // A sum of extents beyond the virtual size limit is refused before any extent is opened.
        let wide = VMDKBytes.descriptor(createType: "custom", extents: ["RW 137438953472 ZERO", "RW 137438953472 FLAT \"nowhere\" 0"])
        try VMDKBytes.write(Array(wide.utf8), to: dir.file("wide.vmdk"))
        #expect(Self.openAndRead(dir.file("wide.vmdk"))?.code == .limitExceeded)
    }

    @Test func oneSparseFileListedManyTimesSharesOneTableBudget() throws {
        // 64 GiB from qemu: 2048 preallocated grain tables (4 MiB) per listing, 16 KiB of grain directory in memory.
        let dir = try TemporaryDirectory("kdct-vmdk")
        try qemuImg("create", "-q", "-f", "vmdk", dir.file("piece.vmdk"), "64G")
        let lines = [String](repeating: "RW 134217728 SPARSE \"piece.vmdk\"", count: 100)
        try VMDKBytes.write(Array(VMDKBytes.descriptor(createType: "custom", extents: lines).utf8), to: dir.file("many.vmdk"))
        let device = try ImageOpener.open(dir.file("many.vmdk"))
        guard case let .array(extents)? = device.info.formatSpecific["extents"] else {
            Issue.record("no extents")
            return
        }
        let eager = extents.filter { $0["grain-tables-loaded-at-open"] == .bool(true) }.count
        #expect(eager == 8, "32 MiB of tables read at open in all, the rest through caches")
        #expect(try device.extent(at: 99 * (64 << 30), maxLength: 1 << 40) == Extent(offset: 99 * (64 << 30), length: 64 << 30, status: .absent))
        var options = OpenOptions()
        options.limits.maxTableBytes = 1 << 20
        let error = #expect(throws: KDCTError.self) { try ImageOpener.open(dir.file("many.vmdk"), options: options) }
        #expect(error?.code == .limitExceeded && error?.field == "grain directory size", "\(String(describing: error))")
    }

    @Test func strictModeAcceptsOnlySingleFileDisks() throws {
        let dir = try TemporaryDirectory("kdct-vmdk")
        var strict = OpenOptions()
        strict.untrusted = true
        try VMDKBytes.write(VMDKBytes.monolithicSparse(capacitySectors: 2048, grains: [0: [1]]), to: dir.file("mono.vmdk"))
        #expect(Self.openAndRead(dir.file("mono.vmdk"), options: strict) == nil)
        try VMDKBytes.write(try VMDKBytes.streamOptimized(capacitySectors: 2048, grains: [0: [1]]), to: dir.file("stream.vmdk"))
        #expect(Self.openAndRead(dir.file("stream.vmdk"), options: strict) == nil)
        try VMDKBytes.write(Array(VMDKBytes.descriptor(createType: "monolithicFlat", extents: ["RW 8 ZERO"]).utf8), to: dir.file("desc.vmdk"))
        #expect(Self.openAndRead(dir.file("desc.vmdk"), options: strict)?.code == .unsupported)
        try VMDKBytes.write(VMDKBytes.monolithicSparse(capacitySectors: 2048, grains: [:], parentHint: "mono.vmdk", parentCID: "12345678"),
                            to: dir.file("child.vmdk"))
        #expect(Self.openAndRead(dir.file("child.vmdk"), options: strict)?.code == .referenceRefused)
    }

    @Test func largeEmptyDisksAreWalkedWithoutReadingGuestData() throws {
        // qemu preallocates every grain table: 128 MiB of them for 2 TiB (above the eager threshold, so tables go
        // through the bounded cache, here limited to 1 MiB), 12.5 MiB for 200 GiB (read at open).
        let dir = try TemporaryDirectory("kdct-vmdk")
        func tablesLoadedAtOpen(_ device: any BlockDevice) -> InfoValue? {
            guard case let .array(extents)? = device.info.formatSpecific["extents"] else { return nil }
            return extents.first?["grain-tables-loaded-at-open"]
        }
        try qemuImg("create", "-q", "-f", "vmdk", dir.file("huge.vmdk"), "2T")
        var options = OpenOptions()
        options.limits.maxTableCacheBytes = 1 << 20
        let huge = try ImageOpener.open(dir.file("huge.vmdk"), options: options)
        #expect(tablesLoadedAtOpen(huge) == .bool(false))
        #expect(try huge.allExtents() == [Extent(offset: 0, length: 2 << 40, status: .absent)])
        try qemuImg("create", "-q", "-f", "vmdk", dir.file("big.vmdk"), "200G")
        let big = try ImageOpener.open(dir.file("big.vmdk"))
        #expect(tablesLoadedAtOpen(big) == .bool(true))
        #expect(try big.allExtents() == [Extent(offset: 0, length: 200 << 30, status: .absent)])
    }
}
