import Testing
import KDCTFormats

/// The foreign signatures strict mode uses to refuse polyglot files (issue 7), decoded from byte arrays.
@Suite struct StrictProbeTests {
    static let qcow2Magic: [UInt8] = [0x51, 0x46, 0x49, 0xFB, 0, 0, 0, 3]

    func head(_ prefix: [UInt8], _ patches: [(Int, [UInt8])] = []) -> [UInt8] {
        var bytes = prefix + [UInt8](repeating: 0, count: 65536 - prefix.count)
        for (offset, patch) in patches { bytes.replaceSubrange(offset..<(offset + patch.count), with: patch) }
        return bytes
    }

    @Test func foreignSignaturesBehindAnImageHeader() {
        let iso = FormatProbe.probe(head: head(Self.qcow2Magic, [(0x8801, Array("CD001".utf8))]))
        #expect(iso.matches == [.qcow2] && iso.foreignSignatures == ["ISO 9660"])
        let mbr = FormatProbe.probe(head: head(Self.qcow2Magic, [(510, [0x55, 0xAA])]))
        #expect(mbr.foreignSignatures == ["MBR boot signature"])
        let gpt = FormatProbe.probe(head: head(Self.qcow2Magic, [(512, Array("EFI PART".utf8))]))
        #expect(gpt.foreignSignatures == ["GPT header"])
        let text = FormatProbe.probe(head: head(Self.qcow2Magic, [(4096, Array("# Disk DescriptorFile\n".utf8))]))
        #expect(text.foreignSignatures == ["VMDK descriptor text"])
        #expect(!text.guestDataAtStart)
    }

    @Test func embeddedDescriptorOfAVMDKIsNotForeign() {
        let sparse = FormatProbe.probe(head: head(Array("KDMV".utf8), [(512, Array("# Disk DescriptorFile\n".utf8))]))
        #expect(sparse.matches == [.vmdk] && sparse.foreignSignatures.isEmpty)
    }

    @Test func guestDataAtTheStartOfAFixedVHD() {
        var footer = Array("conectix".utf8)
        footer += [UInt8](repeating: 0, count: 512 - footer.count)
        let fixed = FormatProbe.probe(head: head([0xEB, 0x63, 0x90], [(510, [0x55, 0xAA])]), tail: footer)
        #expect(fixed.matches == [.vhd] && fixed.guestDataAtStart)
        #expect(fixed.foreignSignatures == ["MBR boot signature"])
        let dynamic = FormatProbe.probe(head: head(Array("conectix".utf8)), tail: footer)
        #expect(dynamic.matches == [.vhd] && !dynamic.guestDataAtStart)
        let raw = FormatProbe.probe(head: head([0xEB, 0x63, 0x90], [(510, [0x55, 0xAA])]))
        #expect(raw.matches.isEmpty && raw.format == .raw)
    }
}
