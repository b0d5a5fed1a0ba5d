/// Recognises an image format from its content (never from its name).
///
/// Probing looks at the magic numbers at the start of the file and at a VHD footer at its end. It reports every
/// format whose signature is present, most specific first, so strict mode can refuse a file that matches two.
public enum FormatProbe {
    /// Bytes read from the start of a file for probing.
    public static let headSize = 64 * 1024

    /// What probing found.
    public struct Result: Sendable, Equatable {
        /// Every format whose signature matched, best first; empty means raw.
        public var matches: [ImageFormat]
        /// Other signatures seen that are not disk image formats (`ISO 9660`, `MBR boot signature`, `GPT header`,
        /// `VMDK descriptor text`), for ambiguity checks.
        public var foreignSignatures: [String]
        /// True when the file starts with guest data, not a header: the only match is a fixed VHD recognised by its
        /// footer. Foreign signatures at the start are then the guest's own (a partitioned or ISO disk), not a
        /// second format.
        public var guestDataAtStart = false

        /// A probe result.
        public init(matches: [ImageFormat], foreignSignatures: [String], guestDataAtStart: Bool = false) {
            self.matches = matches
            self.foreignSignatures = foreignSignatures
            self.guestDataAtStart = guestDataAtStart
        }

        /// The detected format: the best match, or raw.
        public var format: ImageFormat { matches.first ?? .raw }
    }

    /// Probes the file at `path` (its first 64 KiB and its last 512 bytes).
    public static func probe(path: String) throws -> Result {
        try probe(ReadOnlyFile(path: path))
    }

    /// Probes the open file.
    package static func probe(_ file: ReadOnlyFile) throws -> Result {
        let headCount = Int(min(UInt64(headSize), file.size))
        let head = try file.readBytes(count: headCount, at: 0, what: "file header")
        var tail: [UInt8] = []
        if file.size >= 512 {
            tail = try file.readBytes(count: 512, at: file.size - 512, what: "file trailer")
        }
        var tail511: [UInt8] = []
        if file.size >= 511 {
            tail511 = try file.readBytes(count: 511, at: file.size - 511, what: "file trailer")
        }
        return probe(head: head, tail: tail, tail511: tail511)
    }

    /// Probes from the first bytes of a file (`head`, up to 64 KiB) and its last 512 and 511 bytes.
    public static func probe(head: [UInt8], tail: [UInt8] = [], tail511: [UInt8] = []) -> Result {
        var matches: [ImageFormat] = []
        let reader = ByteReader(head, structure: "file header")

        if has(Array("vhdxfile".utf8), at: 0, in: head) { matches.append(.vhdx) }
        if has([0x51, 0x46, 0x49, 0xFB], at: 0, in: head), let version = try? reader.u32be(4) {
            matches.append(version == 1 ? .qcow : .qcow2)
        }
        if has([0x51, 0x45, 0x44, 0x00], at: 0, in: head) { matches.append(.qed) }
        if (try? reader.u32le(0x40)) == 0xBEDA_107F { matches.append(.vdi) }
        if has(Array("KDMV".utf8), at: 0, in: head) || has(Array("COWD".utf8), at: 0, in: head)
            || (try? reader.u64le(0)) == 0x0000_0000_CAFE_BABE {
            matches.append(.vmdk)
        }
        if has(Array("conectix".utf8), at: 0, in: head) { matches.append(.vhd) }
        if !matches.contains(.vmdk), looksLikeVMDKDescriptor(head) { matches.append(.vmdk) }
        // A fixed VHD has its only footer in the last 512 bytes (511 for some old Virtual PC files). Behind another
        // format's header it is still recorded, so strict mode can refuse the ambiguous file.
        let conectix = Array("conectix".utf8)
        if !matches.contains(.vhd), has(conectix, at: 0, in: tail) || has(conectix, at: 0, in: tail511) {
            matches.append(.vhd)
        }
        // Signatures of things that are not image formats but that other tools act on (OpenStack's format
        // inspector refuses such polyglots): an ISO 9660 volume descriptor (sectors 16-18), an MBR boot signature,
        // a GPT header, and VMDK descriptor text behind another format's header (a descriptor at offset 0 is a VMDK).
        var foreign: [String] = []
        if [0x8001, 0x8801, 0x9001].contains(where: { has(Array("CD001".utf8), at: $0, in: head) }) {
            foreign.append("ISO 9660")
        }
        if has([0x55, 0xAA], at: 510, in: head) { foreign.append("MBR boot signature") }
        if has(Array("EFI PART".utf8), at: 512, in: head) { foreign.append("GPT header") }
        if !matches.isEmpty, !matches.contains(.vmdk), containsDescriptorText(head) {
            foreign.append("VMDK descriptor text")
        }
        let guestDataAtStart = matches == [.vhd] && !has(conectix, at: 0, in: head)
        return Result(matches: matches, foreignSignatures: foreign, guestDataAtStart: guestDataAtStart)
    }

    /// True when `bytes` holds `magic` at `offset`.
    static func has(_ magic: [UInt8], at offset: Int, in bytes: [UInt8]) -> Bool {
        guard offset >= 0, bytes.count >= offset + magic.count else { return false }
        return bytes[offset..<(offset + magic.count)].elementsEqual(magic)
    }

    /// True when `head` holds VMDK descriptor text (`# Disk DescriptorFile`) starting at a 512-byte sector boundary
    /// (where VMware and qemu embed it).
    static func containsDescriptorText(_ head: [UInt8]) -> Bool {
        let marker = Array("# Disk DescriptorFile".utf8)
        return stride(from: 0, to: head.count, by: 512).contains { has(marker, at: $0, in: head) }
    }

    /// A VMDK text descriptor: ASCII text whose first lines carry `# Disk DescriptorFile` or a `createType=` key.
    static func looksLikeVMDKDescriptor(_ head: [UInt8]) -> Bool {
        let window = head.prefix(4096)
        guard !window.isEmpty else { return false }
        // Text only: printable characters (bytes >= 0x80 too: UTF-8 or windows-1252 file names, which VMware and
        // qemu write), tabs and line ends, up to the first NUL.
        let textBytes = window.prefix { $0 != 0 }
        guard textBytes.allSatisfy({ ($0 >= 0x20 && $0 != 0x7F) || $0 == 0x09 || $0 == 0x0A || $0 == 0x0D }) else {
            return false
        }
        let text = String(decoding: textBytes, as: UTF8.self)
        return text.contains("# Disk DescriptorFile") || (text.contains("createType") && text.contains("version="))
    }
}
