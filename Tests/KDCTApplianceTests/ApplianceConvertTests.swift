import Foundation
import Testing
@testable import KDCTAppliance
import KDCTFormats
import KDCTTestSupport

/// Appliances in, disks and libvirt domains out.
@Suite struct ApplianceConvertTests {
    static let qcow2URI = "http://www.gnome.org/~markmc/qcow-image-format.html"

    /// A qcow2 and a raw disk made from the test pattern, with qemu-img.
    func makeDisks(_ dir: TemporaryDirectory) throws -> (qcow2: String, raw: String, qcow2Source: String) {
        let source = try TestPattern.writeRaw(to: dir.file("pattern.img"), size: 9 << 20 + 4096)
        try qemuImg("convert", "-f", "raw", "-O", "qcow2", source, dir.file("system.qcow2"))
        let raw = try TestPattern.writeRaw(to: dir.file("data.raw"), size: 3 << 20)
        return (dir.file("system.qcow2"), raw, source)
    }

    func listing(_ directory: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).sorted()
    }

    @Test(arguments: ["ustar", "gnu", "pax"])
    func ovaConvertsEveryDiskAndWritesAValidDomain(tarFormat: String) throws {
        let dir = try TemporaryDirectory()
        let disks = try makeDisks(dir)
        let builder = ApplianceBuilder(dir: dir)
        let ova = try builder.ova(disks: [disks.qcow2, disks.raw], uris: [Self.qcow2URI, nil], format: tarFormat)
        let appliance = try Appliance(path: ova)
        #expect(appliance.container == .ova)
        #expect(appliance.manifest?.entries.count == 3)
        let out = dir.file("out")
        var options = ApplianceConvertOptions()
        options.convert.pipeline.workers = 2
        let result = try ApplianceConverter.convert(appliance, toDirectory: out, options: options)
        #expect(listing(out) == ["testvm-disk1.qcow2", "testvm-disk2.qcow2", "testvm.xml"])
        #expect(result.manifest?.verified.count == 3)
        try expectQemuIdentical(disks.qcow2Source, out + "/testvm-disk1.qcow2", formatA: "raw", formatB: "qcow2")
        try expectQemuIdentical(disks.raw, out + "/testvm-disk2.qcow2", formatA: "raw", formatB: "qcow2")
        try expectQemuCheckClean(out + "/testvm-disk1.qcow2")
        try expectQemuCheckClean(out + "/testvm-disk2.qcow2")
        try expectValidDomainXML(result.domainXMLPath)
        let xml = try String(contentsOfFile: result.domainXMLPath, encoding: .utf8)
        let canonical = FilePaths.canonical(out) ?? out
        #expect(xml.contains("<source file='\(canonical)/testvm-disk1.qcow2'/>"))
        #expect(xml.contains("<target dev='vda' bus='virtio'/>") && xml.contains("<target dev='vdb' bus='virtio'/>"))
        #expect(xml.contains("<memory unit='KiB'>\(1536 * 1024)</memory>"))
        #expect(xml.contains("<vcpu placement='static'>3</vcpu>"))
        #expect(xml.contains("machine='q35'"))
        #expect(xml.components(separatedBy: "<model type='virtio'/>").count - 1 == 3, "two NICs and the video")
        #expect(xml.contains("<serial type='pty'>") && xml.contains("<graphics type='vnc'"))
        #expect(xml.contains("network \"VM Network\""))
        #expect(!result.hints.contains { $0.text.contains("Windows") || $0.topic == .windowsDeviceDefaults })
    }

    @Test func rawOutputWindowsDefaultsAndOverrides() throws {
        let dir = try TemporaryDirectory()
        let disks = try makeDisks(dir)
        var builder = ApplianceBuilder(dir: dir)
        builder.name = "Win 10 / Liz"
        builder.osSection = "<OperatingSystemSection ovf:id=\"1\" vmw:osType=\"windows9_64Guest\"><Info>os</Info></OperatingSystemSection>"
        builder.hardwareExtra = "<vmw:Config ovf:required=\"false\" vmw:key=\"firmware\" vmw:value=\"efi\"/>"
            + "<vmw:Config ovf:required=\"false\" vmw:key=\"bootOptions.efiSecureBootEnabled\" vmw:value=\"true\"/>"
        builder.cpus = 4
        let ova = try builder.ova(disks: [disks.qcow2], uris: [nil], manifest: .sha1)
        var options = ApplianceConvertOptions()
        options.convert = ConvertOptions(outputFormat: .raw)
        options.convert.pipeline.workers = 2
        let result = try ApplianceConverter.convert(try Appliance(path: ova), toDirectory: dir.file("win"), options: options)
        #expect(listing(dir.file("win")) == ["Win-10---Liz-disk1.raw", "Win-10---Liz.xml"])
        try expectQemuIdentical(disks.qcow2Source, dir.file("win/Win-10---Liz-disk1.raw"), formatA: "raw", formatB: "raw")
        #expect(result.hints.contains { $0.topic == .windowsDeviceDefaults && $0.text.contains("virtio-win") })
        try expectValidDomainXML(result.domainXMLPath)
        let xml = try String(contentsOfFile: result.domainXMLPath, encoding: .utf8)
        #expect(xml.contains("<target dev='sda' bus='sata'/>"))
        #expect(xml.contains("<model type='e1000'/>"))
        #expect(xml.contains("<os firmware='efi'>") && xml.contains("name='secure-boot'"))
        #expect(xml.contains("<title>Win 10 / Liz</title>"))
        #expect(xml.contains("<topology sockets='1' dies='1' cores='4' threads='1'/>"))
        #expect(xml.contains("<clock offset='localtime'>") && xml.contains("<hyperv"))

        // The user's choice wins, and no hint is printed for what was asked.
        options.diskBus = .scsi
        options.nicModel = .virtio
        let chosen = try ApplianceConverter.convert(try Appliance(path: ova), toDirectory: dir.file("win2"), options: options)
        #expect(!chosen.hints.contains { $0.topic == .windowsDeviceDefaults })
        try expectValidDomainXML(chosen.domainXMLPath)
        let scsi = try String(contentsOfFile: chosen.domainXMLPath, encoding: .utf8)
        #expect(scsi.contains("model='virtio-scsi'") && scsi.contains("bus='scsi'"))
    }

    @Test func manifestMismatchIsRefusedAndNothingIsWritten() throws {
        let dir = try TemporaryDirectory()
        let disks = try makeDisks(dir)
        let builder = ApplianceBuilder(dir: dir)
        let ova = try builder.ova(disks: [disks.qcow2, disks.raw], uris: [nil, nil], manifest: .wrongDigest)
        let out = dir.file("out")
        let error = #expect(throws: KDCTError.self) {
            try ApplianceConverter.convert(try Appliance(path: ova), toDirectory: out)
        }
        #expect(error?.code == .checksum)
        #expect(error?.message.contains("system.qcow2") == true)
        #expect(!FileManager.default.fileExists(atPath: out), "the output directory is not left behind")
        // An existing output directory is left as it was.
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        #expect(throws: KDCTError.self) { try ApplianceConverter.convert(try Appliance(path: ova), toDirectory: out) }
        #expect(listing(out).isEmpty)
        // Without verification it converts anyway, and says the manifest was not checked.
        var options = ApplianceConvertOptions()
        options.verifyManifest = false
        let result = try ApplianceConverter.convert(try Appliance(path: ova), toDirectory: out, options: options)
        #expect(result.hints.contains { $0.topic == .manifestNotVerified })
        #expect(listing(out).count == 3)
    }

    @Test func brokenAppliancesLeaveNothingBehind() throws {
        let dir = try TemporaryDirectory()
        let disks = try makeDisks(dir)
        let builder = ApplianceBuilder(dir: dir)
        func expectFailure(_ ova: String, _ kind: KDCTError.Code, _ label: String) throws {
            let out = dir.file("out-\(label)")
            let error = #expect(throws: KDCTError.self, "\(label)") {
                try ApplianceConverter.convert(try Appliance(path: ova), toDirectory: out)
            }
            #expect(error?.code == kind, "\(label): \(String(describing: error))")
            #expect(!FileManager.default.fileExists(atPath: out), "\(label): output left behind")
        }
        // A disk member shorter than the descriptor's ovf:size.
        try expectFailure(try builder.ova(disks: [disks.qcow2], uris: [nil], sizeAdjust: 4096), .truncated, "short")
        // A declared format the content contradicts.
        let vmdkURI = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"
        try expectFailure(try builder.ova(disks: [disks.raw], uris: [vmdkURI]), .invalidFormat, "format")
        // The second disk is damaged: the first is opened fine, nothing is written.
        let broken = dir.file("broken.qcow2")
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: disks.qcow2)))
        bytes.replaceSubrange(40..<48, with: [0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xF0])  // l1_table_offset
        try Data(bytes).write(to: URL(fileURLWithPath: broken))
        try expectFailure(try builder.ova(disks: [disks.raw, broken], uris: [nil, nil]), .corrupt, "second-disk")
        // A descriptor naming a member the archive lacks.
        let staged = try builder.stage(disks: [disks.raw], uris: [nil], manifest: .none)
        let missing = dir.file("missing.ova")
        _ = try runProcess(["tar", "-cf", missing, "-C", staged.directory, staged.members[0]])
        try expectFailure(missing, .notFound, "missing")
        // An archive cut short inside a disk member.
        let whole = try builder.ova(disks: [disks.raw], uris: [nil], manifest: .none)
        let cut = dir.file("cut.ova")
        try Data(try Data(contentsOf: URL(fileURLWithPath: whole)).prefix(1 << 20)).write(to: URL(fileURLWithPath: cut))
        let cutError = #expect(throws: KDCTError.self) { try Appliance(path: cut) }
        #expect(cutError?.code == .truncated)
        // Something that is not a tar at all, named .ova.
        let notTar = dir.file("not-tar.ova")
        try Data("just text, not an archive".utf8).write(to: URL(fileURLWithPath: notTar))
        let notTarError = #expect(throws: KDCTError.self) { try Appliance(path: notTar) }
        #expect(notTarError?.code == .invalidFormat)
        #expect(notTarError?.message.contains("tar") == true)
    }

    @Test func failureDuringConversionRemovesWhatWasWritten() throws {
        let dir = try TemporaryDirectory()
        let disks = try makeDisks(dir)
        let ova = try ApplianceBuilder(dir: dir).ova(disks: [disks.qcow2, disks.raw], uris: [nil, nil])
        let out = dir.file("out")
        var options = ApplianceConvertOptions()
        options.convert.pipeline.workers = 1
        // Cancel once the first disk is complete (staged under its temporary name): the second one aborts, and the
        // first must be removed too.
        let firstDone = Counter()
        options.convert.pipeline.isCancelled = {
            let names = (try? FileManager.default.contentsOfDirectory(atPath: out)) ?? []
            let staged = names.contains { $0.hasPrefix(".kdct-") && $0.hasSuffix("-testvm-disk1.qcow2") }
            return staged && firstDone.next() > 0
        }
        let cancelled = #expect(throws: KDCTError.self) {
            try ApplianceConverter.convert(try Appliance(path: ova), toDirectory: out, options: options)
        }
        #expect(cancelled?.code == .cancelled)
        #expect(firstDone.next() > 1, "the first disk was complete when the conversion was cancelled")
        #expect(!FileManager.default.fileExists(atPath: out))
        // Existing files are never replaced without overwrite.
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: out + "/testvm.xml"))
        let exists = #expect(throws: KDCTError.self) { try ApplianceConverter.convert(try Appliance(path: ova), toDirectory: out) }
        #expect(exists?.code == .alreadyExists)
        #expect(listing(out) == ["testvm.xml"])
        #expect(try Data(contentsOf: URL(fileURLWithPath: out + "/testvm.xml")) == Data([1, 2, 3]))
        options = ApplianceConvertOptions()
        options.convert.overwrite = true
        _ = try ApplianceConverter.convert(try Appliance(path: ova), toDirectory: out, options: options)
        #expect(listing(out).count == 3)
        try expectValidDomainXML(out + "/testvm.xml")
    }

    @Test func descriptorInAFolderOfTheArchiveAndLinkMembers() throws {
        let dir = try TemporaryDirectory()
        let disks = try makeDisks(dir)
        let builder = ApplianceBuilder(dir: dir)
        let staged = try builder.stage(disks: [disks.raw], uris: [nil], manifest: .sha256)
        // The whole appliance inside a folder "vm/" of the archive: hrefs are relative to the descriptor.
        let parent = dir.file("parent")
        try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true)
        try FileManager.default.moveItem(atPath: staged.directory, toPath: parent + "/vm")
        let ova = dir.file("folder.ova")
        let tar = try runProcess(["tar", "-cf", ova, "-C", parent] + staged.members.map { "vm/" + $0 })
        #expect(tar.status == 0, "\(tar.stderr)")
        let appliance = try Appliance(path: ova)
        #expect(appliance.descriptorName == "vm/testvm.ovf")
        let result = try ApplianceConverter.convert(appliance, toDirectory: dir.file("out"))
        #expect(result.manifest?.verified.count == 2)
        try expectQemuIdentical(disks.raw, result.disks[0].path, formatA: "raw", formatB: "qcow2")

        // A disk member that is a symbolic link is not followed.
        let linked = dir.file("linked")
        try FileManager.default.createDirectory(atPath: linked, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: parent + "/vm/testvm.ovf", toPath: linked + "/testvm.ovf")
        try FileManager.default.createSymbolicLink(atPath: linked + "/data.raw", withDestinationPath: disks.raw)
        let linkOVA = dir.file("link.ova")
        _ = try runProcess(["tar", "-cf", linkOVA, "-C", linked, "testvm.ovf", "data.raw"])
        let error = #expect(throws: KDCTError.self) {
            try ApplianceConverter.convert(try Appliance(path: linkOVA), toDirectory: dir.file("link-out"))
        }
        #expect(error?.code == .unsupported)
        #expect(!FileManager.default.fileExists(atPath: dir.file("link-out")))
    }

    @Test func ovfDirectoryWithManifestAndBlankDisk() throws {
        let dir = try TemporaryDirectory()
        let disks = try makeDisks(dir)
        let builder = ApplianceBuilder(dir: dir)
        let staged = try builder.stage(disks: [disks.qcow2], uris: [nil], manifest: .sha256)
        let ovf = staged.directory + "/testvm.ovf"
        let appliance = try Appliance(path: ovf)
        #expect(appliance.container == .ovf)
        #expect(appliance.manifestName == "testvm.mf")
        let result = try ApplianceConverter.convert(appliance, toDirectory: dir.file("out"))
        #expect(result.manifest?.verified == ["testvm.ovf", "system.qcow2"])
        try expectQemuIdentical(disks.qcow2Source, dir.file("out/testvm-disk1.qcow2"), formatA: "raw", formatB: "qcow2")
        try expectValidDomainXML(result.domainXMLPath)

        // A blank disk (capacity, no file) becomes an empty image of that size.
        var xml = try String(contentsOfFile: ovf, encoding: .utf8)
        xml = xml.replacingOccurrences(of: "</DiskSection>", with: "<Disk ovf:capacity=\"64\" ovf:capacityAllocationUnits=\"byte * 2^20\" ovf:diskId=\"scratch\"/></DiskSection>")
        let blankOVF = staged.directory + "/blank.ovf"
        try xml.write(toFile: blankOVF, atomically: true, encoding: .utf8)
        let blank = try ApplianceConverter.convert(try Appliance(path: blankOVF), toDirectory: dir.file("blank"))
        #expect(blank.disks.count == 2)
        let info = try qemuImg("info", "--output=json", blank.disks[1].path)
        #expect(info.stdout.contains("\"virtual-size\": \(64 << 20)"))
        // A descriptor naming a file outside its directory is refused by the reference policy.
        let escape = xml.replacingOccurrences(of: "ovf:href=\"system.qcow2\"", with: "ovf:href=\"../system.qcow2\"")
        try escape.write(toFile: staged.directory + "/escape.ovf", atomically: true, encoding: .utf8)
        let refused = #expect(throws: KDCTError.self) {
            try ApplianceConverter.convert(try Appliance(path: staged.directory + "/escape.ovf"), toDirectory: dir.file("esc"))
        }
        #expect(refused?.code == .referenceRefused)
    }

    @Test func memberOver8GiBConverts() throws {
        let dir = try TemporaryDirectory()
        let size: UInt64 = (8 << 30) + 65_536 + 512
        let writes: [(UInt64, [UInt8])] = [
            (0, TestPattern.bytes(offset: 0, length: 4096, kind: "r")),
            ((4 << 30) + 1234, TestPattern.bytes(offset: 1, length: 10_000, kind: "t")),
            (size - 6000, TestPattern.bytes(offset: 2, length: 6000, kind: "r")),
        ]
        // The expected guest, sparse.
        let expected = dir.file("expected.raw")
        _ = FileManager.default.createFile(atPath: expected, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: expected))
        try handle.truncate(atOffset: size)
        for (at, bytes) in writes { handle.seek(toFileOffset: at); handle.write(Data(bytes)) }
        try handle.close()

        for encoding in [TarBuilder.SizeEncoding.pax, .base256] {
            let ova = dir.file("big-\(encoding).ova")
            var tar = try TarBuilder(path: ova)
            let descriptor = ApplianceBuilder(dir: dir).descriptor(disks: [("big.raw", size, nil, size)])
            tar.addFile(name: "testvm.ovf", data: Array(descriptor.utf8))
            try tar.addSparseFile(name: "big.raw", size: size, writes: writes, encoding: encoding)
            try tar.finish()
            let appliance = try Appliance(path: ova)
            let disk = try appliance.openDisk(appliance.machine.disks[0])
            #expect(disk.device.virtualSize == size)
            #expect(disk.device.info.filename == ova + "/big.raw")
            let out = dir.file("out-\(encoding)")
            var options = ApplianceConvertOptions()
            options.convert.pipeline.workers = 2
            let result = try ApplianceConverter.convert(appliance, toDirectory: out, options: options)
            #expect(result.disks[0].result.dataBytesRead < 8 << 20, "holes in the member are not read")
            try expectQemuIdentical(expected, result.disks[0].path, formatA: "raw", formatB: "qcow2")
            try expectQemuCheckClean(result.disks[0].path)
        }
    }

    // MARK: Domain XML for every descriptor

    @Test func everyCorpusDescriptorYieldsAValidDomain() throws {
        guard let corpus = Corpus.load() else { return }
        let dir = try TemporaryDirectory()
        let descriptors = corpus.entries.filter { $0.expect == "ovf" }.map { corpus.directory + "/" + $0.file }
        #expect(!descriptors.isEmpty)
        for (index, path) in descriptors.enumerated() {
            let appliance = try Appliance(path: path)
            let machine = appliance.machine
            let (bus, nic, _) = ApplianceConverter.deviceChoices(for: machine, diskBus: nil, nicModel: nil)
            let paths = machine.disks.indices.map { dir.file("d\(index)-\($0).qcow2") }
            let spec = ApplianceConverter.domainSpec(for: machine, sourceName: FilePaths.lastComponent(of: path),
                                                     diskPaths: paths, format: .qcow2, bus: bus, nic: nic)
            #expect(spec.disks.count == machine.disks.count)
            #expect(spec.nics.count == machine.networkAdapters.count)
            #expect(bus == (machine.operatingSystem.isWindows ? .sata : .virtio))
            try expectValidDomainXML(text: LibvirtDomainXML.render(spec), in: dir, name: "corpus-\(index).xml")
            for other in DiskBus.allCases {
                var variant = spec
                variant.disks = variant.disks.map { LibvirtDomainSpec.Disk(path: $0.path, format: .raw, bus: other) }
                variant.nics = variant.nics.map { LibvirtDomainSpec.NIC(model: .e1000e, macAddress: $0.macAddress, comment: $0.comment) }
                try expectValidDomainXML(text: LibvirtDomainXML.render(variant), in: dir, name: "corpus-\(index)-\(other).xml")
            }
        }
        // The VirtualBox OVF 2.0 one, with EFI and a MAC address.
        let vbox = try OVFDescriptor.parse(Array(ApplianceOVFTests.virtualBoxOVF2.utf8))
        let spec = ApplianceConverter.domainSpec(for: vbox, sourceName: "vbox.ova", diskPaths: ["/tmp/a.qcow2", "/tmp/b.qcow2"],
                                                 format: .qcow2, bus: .virtio, nic: .virtio)
        let xml = LibvirtDomainXML.render(spec)
        #expect(xml.contains("<mac address='08:00:27:ab:cd:ef'/>") && xml.contains("<os firmware='efi'>"))
        try expectValidDomainXML(text: xml, in: dir, name: "vbox.xml")
    }

    @Test func domainXMLEscapesAndNames() throws {
        #expect(LibvirtDomainXML.sanitizedName("../etc/passwd") == "etc-passwd")
        #expect(LibvirtDomainXML.sanitizedName("") == "vm")
        #expect(LibvirtDomainXML.sanitizedName("Ubuntu 22.04 (üñí)") == "Ubuntu-22.04------")
        #expect(LibvirtDomainXML.deviceName(prefix: "vd", index: 0) == "vda")
        #expect(LibvirtDomainXML.deviceName(prefix: "vd", index: 25) == "vdz")
        #expect(LibvirtDomainXML.deviceName(prefix: "sd", index: 26) == "sdaa")
        #expect(LibvirtDomainXML.deviceName(prefix: "sd", index: 701) == "sdzz")
        #expect(LibvirtDomainXML.deviceName(prefix: "sd", index: 702) == "sdaaa")
        let dir = try TemporaryDirectory()
        let hostile = LibvirtDomainSpec(
            name: "<x>'\"&", title: "a\nb <c> & 'd'", description: "--> <!-- & \u{01}", memoryBytes: 1_000_001,
            cpuCount: 6, coresPerSocket: 4, disks: [.init(path: dir.file("it's & <odd>.qcow2"), format: .qcow2, bus: .sata)],
            nics: [.init(model: .virtio, comment: "net \"--x--\" -->")])
        let xml = LibvirtDomainXML.render(hostile)
        #expect(xml.contains("<memory unit='KiB'>977</memory>"), "rounded up to whole KiB")
        #expect(!xml.contains("<topology"), "4 cores per socket does not divide 6 vCPUs")
        try expectValidDomainXML(text: xml, in: dir, name: "hostile.xml")
    }

    /// A 64 MiB raw disk with a GPT (CRCs computed, as a partitioning tool writes it) holding partitions of
    /// `types` (mixed-endian GUID bytes), or an MBR with `mbrTypes` when `types` is nil.
    func partitionedDisk(_ path: String, gptTypes types: [[UInt8]]?, mbrTypes: [(UInt8, Bool)] = []) throws {
        let size: UInt64 = 64 << 20
        let sectors = size / 512
        var mbr = [UInt8](repeating: 0, count: 512)
        func putLE(_ value: UInt64, _ count: Int, into bytes: inout [UInt8], at offset: Int) {
            for index in 0..<count { bytes[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(index))) }
        }
        mbr[510] = 0x55
        mbr[511] = 0xAA
        var image = [UInt8]()
        if let types {
            mbr[446 + 4] = 0xEE
            putLE(1, 4, into: &mbr, at: 446 + 8)
            putLE(sectors - 1, 4, into: &mbr, at: 446 + 12)
            var entries = [UInt8](repeating: 0, count: 128 * 128)
            for (index, type) in types.enumerated() {
                let base = index * 128
                entries.replaceSubrange(base..<(base + 16), with: type)
                for k in 0..<16 { entries[base + 16 + k] = UInt8(index * 16 + k + 1) }
                putLE(UInt64(2048 + index * 20480), 8, into: &entries, at: base + 32)
                putLE(UInt64(2048 + index * 20480 + 20479), 8, into: &entries, at: base + 40)
            }
            var header = [UInt8](repeating: 0, count: 512)
            header.replaceSubrange(0..<8, with: Array("EFI PART".utf8))
            putLE(0x0001_0000, 4, into: &header, at: 8)
            putLE(92, 4, into: &header, at: 12)
            putLE(1, 8, into: &header, at: 24)
            putLE(sectors - 1, 8, into: &header, at: 32)
            putLE(34, 8, into: &header, at: 40)
            putLE(sectors - 34, 8, into: &header, at: 48)
            for k in 0..<16 { header[56 + k] = UInt8(0xA0 + k) }
            putLE(2, 8, into: &header, at: 72)
            putLE(128, 4, into: &header, at: 80)
            putLE(128, 4, into: &header, at: 84)
            putLE(UInt64(crc32(entries)), 4, into: &header, at: 88)
            putLE(UInt64(crc32(Array(header[0..<92]))), 4, into: &header, at: 16)
            image = mbr + header + entries
        } else {
            for (index, (type, active)) in mbrTypes.enumerated() {
                let base = 446 + index * 16
                mbr[base] = active ? 0x80 : 0
                mbr[base + 4] = type
                putLE(UInt64(2048 + index * 20480), 4, into: &mbr, at: base + 8)
                putLE(20480, 4, into: &mbr, at: base + 12)
            }
            image = mbr
        }
        _ = FileManager.default.createFile(atPath: path, contents: Data(image))
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try handle.truncate(atOffset: size)
        try handle.close()
    }

    /// CRC-32 (IEEE 802.3, reflected), as GPT uses.
    func crc32(_ bytes: [UInt8]) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in bytes {
            crc ^= UInt32(byte)
            for _ in 0..<8 { crc = crc & 1 != 0 ? (crc >> 1) ^ 0xEDB8_8320 : crc >> 1 }
        }
        return ~crc
    }

    @Test func singleDiskDomainGuessesFirmwareFromThePartitionTable() throws {
        let dir = try TemporaryDirectory()
        #expect(crc32(Array("123456789".utf8)) == 0xCBF4_3926, "CRC-32 check value")
        let esp = BootFirmwareProbe.espType
        let linux: [UInt8] = [0xAF, 0x3D, 0xC6, 0x0F, 0x83, 0x84, 0x72, 0x47, 0x8E, 0x79, 0x3D, 0x69, 0xD8, 0x47, 0x7D, 0xE4]
        let gpt = dir.file("gpt.raw")
        try partitionedDisk(gpt, gptTypes: [esp, linux])
        #expect(try BootFirmwareProbe.guess(ImageOpener.open(gpt)) == .efi)
        let hybrid = dir.file("hybrid.raw")
        try partitionedDisk(hybrid, gptTypes: [BootFirmwareProbe.biosBootType, esp, linux])
        #expect(try BootFirmwareProbe.guess(ImageOpener.open(hybrid)) == .bios)
        let linuxOnly = dir.file("linux.raw")
        try partitionedDisk(linuxOnly, gptTypes: [linux])
        #expect(try BootFirmwareProbe.guess(ImageOpener.open(linuxOnly)) == nil)
        let mbr = dir.file("mbr.raw")
        try partitionedDisk(mbr, gptTypes: nil, mbrTypes: [(0x83, true)])
        #expect(try BootFirmwareProbe.guess(ImageOpener.open(mbr)) == .bios)
        let mbrESP = dir.file("mbr-esp.raw")
        try partitionedDisk(mbrESP, gptTypes: nil, mbrTypes: [(0xEF, false), (0x83, false)])
        #expect(try BootFirmwareProbe.guess(ImageOpener.open(mbrESP)) == .efi)
        let empty = try TestPattern.writeRaw(to: dir.file("pattern.raw"), size: 2 << 20)
        #expect(try BootFirmwareProbe.guess(ImageOpener.open(empty)) == nil)
        // A GPT whose entry table would be huge is not read.
        var header = try [UInt8](Data(contentsOf: URL(fileURLWithPath: gpt)).prefix(1024))
        header[512 + 80] = 0xFF
        header[512 + 81] = 0xFF
        header[512 + 82] = 0xFF
        let huge = dir.file("huge.raw")
        _ = FileManager.default.createFile(atPath: huge, contents: Data(header))
        #expect(try BootFirmwareProbe.guess(ImageOpener.open(huge)) == nil)

        // qcow2 of the GPT disk, as a converted disk would be.
        try qemuImg("convert", "-f", "raw", "-O", "qcow2", gpt, dir.file("vm.qcow2"))
        let (spec, hints) = ApplianceConverter.singleDiskDomain(source: try ImageOpener.open(dir.file("vm.qcow2")),
                                                                diskPath: dir.file("vm.qcow2"), format: .qcow2,
                                                                diskBus: nil, nicModel: nil)
        #expect(spec.firmware == .efi && spec.name == "vm" && spec.disks.first?.bus == .virtio)
        #expect(hints.contains { $0.text.contains("UEFI") })
        try expectValidDomainXML(text: LibvirtDomainXML.render(spec), in: dir, name: "single.xml")
    }

    @Test(arguments: ["streamOptimized", "monolithicSparse"])
    func vmdkMembersConvert(subformat: String) throws {
        let dir = try TemporaryDirectory()
        let source = try TestPattern.writeRaw(to: dir.file("pattern.img"), size: 11 << 20 + 8192)
        let vmdk = dir.file("disk-\(subformat).vmdk")
        try qemuImg("convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=\(subformat)", source, vmdk)
        let uri = "http://www.vmware.com/interfaces/specifications/vmdk.html#\(subformat == "monolithicSparse" ? "sparse" : subformat)"
        let ova = try ApplianceBuilder(dir: dir).ova(disks: [vmdk], uris: [uri], manifest: .sha1, format: "pax")
        let out = dir.file("out")
        guard ImageOpener.canRead(.vmdk) else {
            let error = #expect(throws: KDCTError.self) { try ApplianceConverter.convert(try Appliance(path: ova), toDirectory: out) }
            #expect(error?.code == .unsupported)
            #expect(!FileManager.default.fileExists(atPath: out))
            print("ApplianceConvertTests: the VMDK reader is not in this build; the \(subformat) member was checked to fail cleanly only")
            return
        }
        let appliance = try Appliance(path: ova)
        let disk = try appliance.openDisk(appliance.machine.disks[0])
        #expect(disk.device.info.format == .vmdk)
        #expect(disk.device.info.filename == ova + "/disk-\(subformat).vmdk")
        let result = try ApplianceConverter.convert(appliance, toDirectory: out)
        try expectQemuIdentical(source, result.disks[0].path, formatA: "raw", formatB: "qcow2")
        try expectQemuCheckClean(result.disks[0].path)
        try expectValidDomainXML(result.domainXMLPath)
    }

    // MARK: Corpus OVAs

    @Test func corpusAppliances() throws {
        guard let corpus = Corpus.load() else { return }
        let dir = try TemporaryDirectory()
        let vmdkReadable = ImageOpener.canRead(.vmdk)
        for entry in corpus.entries where entry.file.hasSuffix(".ova") {
            let path = corpus.directory + "/" + entry.file
            let out = dir.file("out-\(FilePaths.lastComponent(of: entry.file))")
            if entry.expect == "ova-ok" {
                let appliance = try Appliance(path: path)
                #expect(appliance.machine.disks.count == 1, "\(entry.file): one disk")
                guard vmdkReadable else {
                    let error = #expect(throws: KDCTError.self) { try ApplianceConverter.convert(appliance, toDirectory: out) }
                    #expect(error?.code == .unsupported, "\(entry.file): \(String(describing: error))")
                    #expect(!FileManager.default.fileExists(atPath: out))
                    print("ApplianceConvertTests: the VMDK reader is not in this build; \(entry.file) was checked to fail cleanly only")
                    continue
                }
                let result = try ApplianceConverter.convert(appliance, toDirectory: out)
                #expect(try guestSHA256(result.disks[0].path) == entry.sha256, "\(entry.file)")
                #expect(result.disks[0].result.virtualSize == entry.virtual_size)
                try expectQemuCheckClean(result.disks[0].path)
                try expectValidDomainXML(result.domainXMLPath)
            } else if entry.expect.hasPrefix("error:") {
                let kind = String(entry.expect.dropFirst("error:".count))
                let error = #expect(throws: KDCTError.self, "\(entry.file)") {
                    try ApplianceConverter.convert(try Appliance(path: path), toDirectory: out)
                }
                if vmdkReadable || kind == "truncated" {
                    #expect(error?.code.rawValue == kind, "\(entry.file): \(String(describing: error))")
                }
                #expect(error?.description.contains(FilePaths.lastComponent(of: entry.file)) == true, "the message names the file")
                #expect(!FileManager.default.fileExists(atPath: out), "\(entry.file): output left behind")
            }
        }
    }
}
