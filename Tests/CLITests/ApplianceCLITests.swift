import Foundation
import KDCTFormats
import KDCTTestSupport
import Testing

/// `info` and `convert` on OVA/OVF appliances, run through the built binary.
@Suite struct ApplianceCLITests {
    func listing(_ directory: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).sorted()
    }

    /// A qcow2 disk of the test pattern and the raw it came from.
    func disk(_ dir: TemporaryDirectory) throws -> (qcow2: String, raw: String) {
        let raw = try TestPattern.writeRaw(to: dir.file("pattern.raw"), size: 5 << 20 + 512)
        try qemuImg("convert", "-f", "raw", "-O", "qcow2", raw, dir.file("disk.qcow2"))
        return (dir.file("disk.qcow2"), raw)
    }

    @Test func infoDescribesAnAppliance() throws {
        let dir = try TemporaryDirectory()
        let disks = try disk(dir)
        var builder = ApplianceBuilder(dir: dir)
        builder.cpus = 2
        builder.memoryMB = 3072
        let ova = try builder.ova(disks: [disks.qcow2], uris: [nil], fileName: "vm.ova")
        let human = try CLI.run(["info", ova])
        #expect(human.status == 0, "\(human.stderr)")
        #expect(human.stdout.contains("name: testvm"))
        #expect(human.stdout.contains("vCPUs: 2"))
        #expect(human.stdout.contains("memory: 3 GiB"))
        #expect(human.stdout.contains("disk.qcow2"))
        #expect(human.stdout.contains("VMXNET3 on \"VM Network\""))
        #expect(human.stdout.contains("manifest: testvm.mf (2 files, SHA256"))

        let json = try CLI.run(["info", "--output", "json", ova])
        #expect(json.status == 0)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        #expect(object["format"] as? String == "ova")
        #expect(object["cpus"] as? Int == 2)
        #expect(object["memory"] as? Int == 3072 << 20)
        #expect((object["disks"] as? [[String: Any]])?.first?["file"] as? String == "disk.qcow2")
        #expect((object["nics"] as? [[String: Any]])?.count == 2)

        // A corpus descriptor with deployment configurations.
        if let corpus = Corpus.load() {
            let ovf = corpus.directory + "/cot/input.ovf"
            let small = try CLI.run(["info", "--output", "json", "--config", "2CPU-2GB-1NIC", ovf])
            let config = try JSONSerialization.jsonObject(with: Data(small.stdout.utf8)) as? [String: Any]
            #expect(config?["cpus"] as? Int == 2)
            #expect(config?["configuration"] as? String == "2CPU-2GB-1NIC")
            let wrong = try CLI.run(["info", "--config", "huge", ovf])
            #expect(wrong.status == 1)
            #expect(wrong.stderr.contains("4CPU-4GB-3NIC"))
        }
        let notAppliance = try CLI.run(["info", "--config", "x", disks.qcow2])
        #expect(notAppliance.status != 0)
    }

    @Test func convertWritesDisksAndADomain() throws {
        let dir = try TemporaryDirectory()
        let disks = try disk(dir)
        let ova = try ApplianceBuilder(dir: dir).ova(disks: [disks.qcow2], uris: [nil], fileName: "vm.ova")
        let out = dir.file("out")
        let result = try CLI.run(["convert", "-O", "qcow2", "-m", "2", ova, out])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(listing(out) == ["testvm-disk1.qcow2", "testvm.xml"])
        #expect(result.stdout.contains("domain: "))
        try expectQemuIdentical(disks.raw, out + "/testvm-disk1.qcow2", formatA: "raw", formatB: "qcow2")
        try expectQemuCheckClean(out + "/testvm-disk1.qcow2")
        try expectValidDomainXML(out + "/testvm.xml")
        // A second run refuses to replace; --force replaces.
        let again = try CLI.run(["convert", "-O", "qcow2", ova, out])
        #expect(again.status == 1)
        #expect(again.stderr.contains("exists"))
        #expect(try CLI.run(["convert", "-O", "qcow2", "--force", ova, out]).status == 0)
        // raw output, options for the domain.
        let rawOut = dir.file("raw")
        let raw = try CLI.run(["convert", "--disk-bus", "scsi", "--nic-model", "e1000e", ova, rawOut])
        #expect(raw.status == 0, "\(raw.stderr)")
        try expectQemuIdentical(disks.raw, rawOut + "/testvm-disk1.raw", formatA: "raw", formatB: "raw")
        let xml = try String(contentsOfFile: rawOut + "/testvm.xml", encoding: .utf8)
        #expect(xml.contains("bus='scsi'") && xml.contains("<model type='e1000e'/>") && xml.contains("type='raw'"))
        try expectValidDomainXML(rawOut + "/testvm.xml")
        #expect(try CLI.run(["convert", "--disk-bus", "ide", ova, dir.file("ide")]).status != 0, "q35 has no IDE")
    }

    @Test func windowsHintManifestMismatchAndNoVerify() throws {
        let dir = try TemporaryDirectory()
        let disks = try disk(dir)
        var builder = ApplianceBuilder(dir: dir)
        builder.osSection = "<OperatingSystemSection ovf:id=\"103\"><Info>os</Info></OperatingSystemSection>"
        let good = try builder.ova(disks: [disks.qcow2], uris: [nil], fileName: "win.ova")
        let out = dir.file("win")
        let result = try CLI.run(["convert", good, out])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.contains("note: Windows guest"))
        #expect(result.stderr.contains("--disk-bus virtio --nic-model virtio"))
        let xml = try String(contentsOfFile: out + "/testvm.xml", encoding: .utf8)
        #expect(xml.contains("bus='sata'") && xml.contains("<model type='e1000'/>"))
        try expectValidDomainXML(out + "/testvm.xml")

        let bad = try builder.ova(disks: [disks.qcow2], uris: [nil], manifest: .wrongDigest, fileName: "bad.ova")
        let refused = try CLI.run(["convert", bad, dir.file("bad")])
        #expect(refused.status == 1)
        #expect(refused.stderr.contains("checksum mismatch") && refused.stderr.contains("disk.qcow2"))
        #expect(refused.stderr.contains("(--no-verify converts anyway)"), "the CLI adds its flag: \(refused.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir.file("bad")))
        let forced = try CLI.run(["convert", "--no-verify", bad, dir.file("bad")])
        #expect(forced.status == 0, "\(forced.stderr)")
        #expect(forced.stderr.contains("--no-verify"))
    }

    @Test func singleImageDomainXML() throws {
        let dir = try TemporaryDirectory()
        let disks = try disk(dir)
        let xmlPath = dir.file("vm.xml")
        let result = try CLI.run(["convert", "-O", "qcow2", disks.raw, dir.file("vm.qcow2"), "--domain-xml", xmlPath])
        #expect(result.status == 0, "\(result.stderr)")
        try expectValidDomainXML(xmlPath)
        let xml = try String(contentsOfFile: xmlPath, encoding: .utf8)
        let canonical = FilePaths.canonical(dir.file("vm.qcow2")) ?? dir.file("vm.qcow2")
        #expect(xml.contains("<source file='\(canonical)'/>"))
        #expect(xml.contains("<name>vm</name>") && xml.contains("bus='virtio'"))
        #expect(result.stderr.contains("2 vCPUs"))
        // An existing domain file is not replaced without --force.
        let again = try CLI.run(["convert", "-O", "qcow2", disks.raw, dir.file("vm2.qcow2"), "--domain-xml", xmlPath])
        #expect(again.status == 1)
        #expect(try CLI.run(["convert", "--no-verify", disks.raw, dir.file("x.raw")]).status != 0)
    }

    @Test func corpusAppliancesFailClearly() throws {
        guard let corpus = Corpus.load() else { return }
        let dir = try TemporaryDirectory()
        for entry in corpus.entries where entry.file.hasSuffix(".ova") && entry.expect.hasPrefix("error:") {
            let out = dir.file(FilePaths.lastComponent(of: entry.file))
            let result = try CLI.run(["convert", corpus.directory + "/" + entry.file, out])
            #expect(result.status == 1, "\(entry.file)")
            #expect(result.stderr.hasPrefix("kdct-native: "), "\(entry.file): one clear line: \(result.stderr)")
            #expect(result.stderr.split(separator: "\n").count == 1)
            #expect(!FileManager.default.fileExists(atPath: out), "\(entry.file): no output")
        }
    }
}
