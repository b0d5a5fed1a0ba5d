import Foundation
import KDCTFormats
import KDCTTestSupport
import Testing

/// One hostile image: how to make it, which words the one-line error must contain (the field or table entry),
/// and whether `info` (which reads only headers and top-level tables, never guest data or references) sees it.
struct HostileCase: Sendable, CustomStringConvertible {
    /// What `info` does with the image.
    enum InfoOutcome: Sendable {
        /// Fails like `convert` (the damage is in metadata read at open).
        case fails
        /// Succeeds: the damage is in a table or data that only a read reaches.
        case succeeds
        /// Succeeds and lists the reference as not opened.
        case reportsReference(String)
    }

    /// The bug class (CVE or corruption class) and format, e.g. `CVE-2014-0222 qcow l2_bits`.
    var description: String
    /// Extra CLI arguments (`--untrusted`, `-f raw`...).
    var arguments: [String] = []
    /// Words the error line must contain besides the file name.
    var expected: [String]
    var info: InfoOutcome = .fails
    /// Builds the image in the directory; returns its path.
    var build: @Sendable (_ directory: TemporaryDirectory) throws -> String
}

extension HostileCase {
    /// A case that patches bytes of the base image `disk.<format>` (`HostileBase.image`): each patch is a file
    /// offset and the bytes.
    static func patching(description: String, arguments: [String] = [], expected: [String], info: InfoOutcome = .fails,
                         format: String, patches: [(Int, [UInt8])]) -> HostileCase {
        HostileCase(description: description, arguments: arguments, expected: expected, info: info) { d in
            let path = try HostileBase.image(d, "disk.\(format)", format: format)
            for (offset, bytes) in patches { try ImageBytes.patch(path, at: offset, bytes) }
            return path
        }
    }

    /// A case that changes the first L2 entry of a qcow2 base image (damage only a read reaches: `info` succeeds).
    static func changingFirstQCOW2L2Entry(description: String, expected: [String],
                                          _ change: @escaping @Sendable (UInt64) -> UInt64) -> HostileCase {
        HostileCase(description: description, expected: expected, info: .succeeds) { d in
            let path = try HostileBase.image(d, "disk.qcow2", format: "qcow2")
            let entry = try HostileLayout.qcow2FirstL2Entry(path)
            try ImageBytes.patch(path, at: entry, ImageBytes.be64(change(try ImageBytes.bigEndian(path, at: entry, width: 8))))
            return path
        }
    }
}

/// Makes the base images the hostile cases patch: a 4 MiB guest with TestPattern content, converted by qemu-img.
enum HostileBase {
    static let guestSize: UInt64 = 4 << 20

    /// `name` in `directory`, converted from the pattern with `qemu-img convert -O format -o options`.
    static func image(_ directory: TemporaryDirectory, _ name: String, format: String, options: String? = nil,
                      compress: Bool = false) throws -> String {
        let raw = directory.file("pattern.raw")
        if !FileManager.default.fileExists(atPath: raw) { try TestPattern.writeRaw(to: raw, size: guestSize) }
        let path = directory.file(name)
        var arguments = ["qemu-img", "convert", "-f", "raw", "-O", format]
        if let options { arguments += ["-o", options] }
        if compress { arguments.append("-c") }
        let result = try runProcess(arguments + [raw, path])
        // qemu 7.2 exits 1 after writing a complete compressed qcow (v1) image (FORMATS.md, "QCOW").
        guard result.status == 0 || (format == "qcow" && compress && FileManager.default.fileExists(atPath: path)) else {
            throw KDCTError(.io, "qemu-img convert failed: \(result.stderr)")
        }
        FilePaths.remove(raw)
        return path
    }

    /// `qemu-img create` with `arguments` (run in `directory`, so relative backing names stay relative).
    static func create(_ directory: TemporaryDirectory, _ arguments: [String]) throws {
        let result = try runProcess(["sh", "-c", "cd \"$0\" && exec qemu-img create -q \"$@\"", directory.path] + arguments)
        guard result.status == 0 else { throw KDCTError(.io, "qemu-img create failed: \(result.stderr)") }
    }

    /// Makes `disk.<format>` in the directory, a 4 MiB image over the raw backing file `backing` (not checked);
    /// returns its path.
    static func image(_ directory: TemporaryDirectory, format: String, backedBy backing: String) throws -> String {
        try create(directory, ["-f", format, "-u", "-b", backing, "-F", "raw", "disk.\(format)", "4M"])
        return directory.file("disk.\(format)")
    }

    /// A file outside the image's directory that a hostile image names (it must never be opened).
    static func secret(_ directory: TemporaryDirectory) throws -> String {
        let outside = directory.file("outside")
        try FileManager.default.createDirectory(atPath: outside, withIntermediateDirectories: true)
        let path = outside + "/secret.raw"
        try Data(repeating: 0x53, count: 1 << 20).write(to: URL(fileURLWithPath: path))
        return path
    }

    /// The directory holding the image (a subdirectory, so `outside/` really is outside it).
    static func imageDirectory(_ directory: TemporaryDirectory) throws -> String {
        let path = directory.file("images")
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }
}

/// Locations inside qemu-made images, read from their own tables.
enum HostileLayout {
    /// File offset of the first L2 entry of the first L2 table of a qcow2 image (cluster 0's entry).
    static func qcow2FirstL2Entry(_ path: String) throws -> Int {
        let l1 = try ImageBytes.bigEndian(path, at: 40, width: 8)
        let l2 = try ImageBytes.bigEndian(path, at: Int(l1), width: 8) & 0x00FF_FFFF_FFFF_FE00
        return Int(l2)
    }

    /// File offset of the first L2 entry of a QCOW v1 image.
    static func qcowFirstL2Entry(_ path: String) throws -> Int {
        let l1 = try ImageBytes.bigEndian(path, at: 40, width: 8)
        return Int(try ImageBytes.bigEndian(path, at: Int(l1), width: 8))
    }

    /// File offset of the first L2 entry of a QED image.
    static func qedFirstL2Entry(_ path: String) throws -> Int {
        let l1 = try ImageBytes.littleEndian(path, at: 40, width: 8)
        return Int(try ImageBytes.littleEndian(path, at: Int(l1), width: 8))
    }

    /// File offset of the first grain table entry of a monolithicSparse VMDK.
    static func vmdkFirstGrainTableEntry(_ path: String) throws -> Int {
        let gd = try ImageBytes.littleEndian(path, at: 56, width: 8) * 512
        return Int(try ImageBytes.littleEndian(path, at: Int(gd), width: 4) * 512)
    }

    /// File offset of the first grain marker (lba 0) of a streamOptimized VMDK.
    static func vmdkFirstGrainMarker(_ path: String) throws -> Int {
        let bytes = try ImageBytes.read(path)
        var offset = 512
        while offset + 14 < bytes.count {
            let lba = bytes[offset..<(offset + 8)].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            let size = bytes[(offset + 8)..<(offset + 12)].reversed().reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
            if lba == 0, size > 0, size < 200_000, bytes[offset + 12] == 0x78 { return offset }
            offset += 512
        }
        throw KDCTError(.notFound, "no grain marker in \(path)")
    }

    /// File offset of a dynamic VHD's dynamic header (the footer copy's data offset).
    static func vhdDynamicHeader(_ path: String) throws -> Int {
        Int(try ImageBytes.bigEndian(path, at: 16, width: 8))
    }

    /// The VHD checksum: one's complement of the byte sum with the checksum field (at `field`) taken as zero.
    static func vhdChecksum(_ bytes: [UInt8], field: Int) -> UInt32 {
        var sum: UInt32 = 0
        for (index, byte) in bytes.enumerated() where !(field..<(field + 4)).contains(index) { sum &+= UInt32(byte) }
        return ~sum
    }

    /// Applies `change` to both footers of a dynamic VHD (the copy at 0 and the one at the end) with valid checksums.
    static func patchVHDFooters(_ path: String, _ change: (inout [UInt8]) -> Void) throws {
        let bytes = try ImageBytes.read(path)
        for offset in [0, bytes.count - 512] {
            var footer = Array(bytes[offset..<(offset + 512)])
            change(&footer)
            footer.replaceSubrange(64..<68, with: ImageBytes.be32(vhdChecksum(footer, field: 64)))
            try ImageBytes.patch(path, at: offset, footer)
        }
    }

    /// Turns a dynamic VHD into a differencing disk whose parent is `parent` (unicode name and a W2ku locator).
    static func makeVHDDifferencing(_ path: String, parent: String) throws {
        try patchVHDFooters(path) { $0.replaceSubrange(60..<64, with: ImageBytes.be32(4)) }
        let headerOffset = try vhdDynamicHeader(path)
        var header = Array(try ImageBytes.read(path)[headerOffset..<(headerOffset + 1024)])
        let name = Array(parent.utf16).flatMap { [UInt8($0 >> 8), UInt8($0 & 0xFF)] }
        header.replaceSubrange(64..<(64 + name.count), with: name)
        // Locator data: a sector inserted before the footer at the end of the file.
        var bytes = try ImageBytes.read(path)
        let dataOffset = UInt64(bytes.count - 512)
        let little = Array(parent.utf16).flatMap { [UInt8($0 & 0xFF), UInt8($0 >> 8)] }
        precondition(little.count <= 512)
        let locator = Array("W2ku".utf8) + ImageBytes.be32(512) + ImageBytes.be32(UInt32(little.count)) + ImageBytes.be32(0)
            + ImageBytes.be64(dataOffset)
        header.replaceSubrange(576..<600, with: locator)
        header.replaceSubrange(36..<40, with: ImageBytes.be32(vhdChecksum(header, field: 36)))
        bytes.replaceSubrange(headerOffset..<(headerOffset + 1024), with: header)
        let footer = Array(bytes.suffix(512))
        bytes.removeLast(512)
        bytes += little + [UInt8](repeating: 0, count: 512 - little.count) + footer
        try ImageBytes.write(bytes, to: path)
    }

    /// VHDX region GUIDs as stored (little-endian first three fields).
    static let vhdxBATRegion: [UInt8] = [0x66, 0x77, 0xC2, 0x2D, 0x23, 0xF6, 0x00, 0x42, 0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD, 0x4A, 0x08]
    static let vhdxMetadataRegion: [UInt8] = [0x06, 0xA2, 0x7C, 0x8B, 0x90, 0x47, 0x9A, 0x4B, 0xB8, 0xFE, 0x57, 0x5F, 0x05, 0x0F, 0x88, 0x6E]
    static let vhdxFileParametersItem: [UInt8] = [0x37, 0x67, 0xA1, 0xCA, 0x36, 0xFA, 0x43, 0x4D, 0xB3, 0xB6, 0x33, 0xF0, 0xAA, 0x44, 0xE7, 0x6B]

    /// File offset of the VHDX region with `guid`, from the first region table (at 192 KiB).
    static func vhdxRegion(_ path: String, guid: [UInt8]) throws -> Int {
        let bytes = try ImageBytes.read(path)
        let table = 0x30000
        let count = Int(try ImageBytes.littleEndian(path, at: table + 8, width: 4))
        for index in 0..<count {
            let entry = table + 16 + 32 * index
            if Array(bytes[entry..<(entry + 16)]) == guid {
                return Int(try ImageBytes.littleEndian(path, at: entry + 16, width: 8))
            }
        }
        throw KDCTError(.notFound, "no region \(guid) in \(path)")
    }

    /// File offset of the VHDX file parameters item (block size first).
    static func vhdxFileParameters(_ path: String) throws -> Int {
        let metadata = try vhdxRegion(path, guid: vhdxMetadataRegion)
        let bytes = try ImageBytes.read(path)
        let count = Int(try ImageBytes.littleEndian(path, at: metadata + 10, width: 2))
        for index in 0..<count {
            let entry = metadata + 32 + 32 * index
            if Array(bytes[entry..<(entry + 16)]) == vhdxFileParametersItem {
                return metadata + Int(try ImageBytes.littleEndian(path, at: entry + 16, width: 4))
            }
        }
        throw KDCTError(.notFound, "no file parameters item in \(path)")
    }

    /// Rewrites the embedded descriptor of a hosted sparse VMDK with `transform` (the area keeps its size).
    static func rewriteEmbeddedDescriptor(_ path: String, _ transform: (String) -> String) throws {
        let offset = Int(try ImageBytes.littleEndian(path, at: 28, width: 8)) * 512
        let size = Int(try ImageBytes.littleEndian(path, at: 36, width: 8)) * 512
        let bytes = try ImageBytes.read(path)
        let text = String(decoding: bytes[offset..<(offset + size)].prefix { $0 != 0 }, as: UTF8.self)
        var replaced = Array(transform(text).utf8)
        precondition(replaced.count <= size)
        replaced += [UInt8](repeating: 0, count: size - replaced.count)
        try ImageBytes.patch(path, at: offset, replaced)
    }
}

/// Regression tests for the bug classes of qemu's and OpenStack's image CVEs, for every format, through the CLI:
/// each hostile image must end in exit status 1 with one line naming the file and the field, within
/// `prlimit --as=1GiB --cpu=10`, leaving no output file and the input unchanged (SHA-256 and mtime).
@Suite struct HostileImageTests {
    typealias B = HostileBase
    typealias L = HostileLayout
    typealias P = ImageBytes

    static let cases: [HostileCase] = qcow2Cases + qcowCases + qedCases + vdiCases + vmdkCases + vhdCases + vhdxCases + rawCases
        + polyglotCases

    // MARK: QCOW2

    static let qcow2Cases: [HostileCase] = [
        // CVE-2014-0142 class: a zero or absurd block size (division by zero, shifts past 63).
        HostileCase.patching(description: "CVE-2014-0142 qcow2 cluster_bits 0", expected: ["cluster_bits"],
            format: "qcow2", patches: [(20, P.be32(0))]),
        // CVE-2014-0143 class: integer overflow in table sizes (l1_size * 8, size rounded up to clusters).
        HostileCase.patching(description: "CVE-2014-0143 qcow2 l1_size 0x10000000", expected: ["l1_size"],
            format: "qcow2", patches: [(36, P.be32(0x1000_0000))]),
        HostileCase.patching(description: "CVE-2014-0143 qcow2 size 2^63", expected: ["size", "limit"],
            format: "qcow2", patches: [(24, P.be64(1 << 63))]),
        // CVE-2014-0144 class: header fields not validated (header_length, backing name length, table offsets).
        HostileCase.patching(description: "CVE-2014-0144 qcow2 header_length 50", expected: ["header_length"],
            format: "qcow2", patches: [(100, P.be32(50))]),
        HostileCase.patching(description: "CVE-2014-0144 qcow2 backing_file_size 5000", expected: ["backing_file_size"],
            format: "qcow2", patches: [(8, P.be64(512)), (16, P.be32(5000))]),
        HostileCase.patching(description: "CVE-2014-0144 qcow2 l1_table_offset past end of file", expected: ["l1_table_offset"],
            format: "qcow2", patches: [(40, P.be64(1 << 40))]),
        // CVE-2014-0145 class: snapshot table sizes (count, per-entry lengths) trusted.
        HostileCase.patching(description: "CVE-2014-0145 qcow2 nb_snapshots 0x7fffffff", expected: ["nb_snapshots"],
            format: "qcow2", patches: [(60, P.be32(0x7FFF_FFFF)), (64, P.be64(0x10000))]),
        HostileCase(description: "CVE-2014-0145 qcow2 snapshot extra data size", expected: ["snapshot"]) { d in
            let path = try B.image(d, "disk.qcow2", format: "qcow2")
            _ = try qemuImg("snapshot", "-c", "s1", path)
            let table = Int(try P.bigEndian(path, at: 64, width: 8))
            try P.patch(path, at: table + 36, P.be32(0x7FFF_0000))
            return path
        },
        // CVE-2014-0146 class: table entries used without checks (L1/L2 pointers, reserved bits, refcounts).
        HostileCase(description: "CVE-2014-0146 qcow2 L1 entry past end of file", expected: ["L1 entry 0"],
                    info: .succeeds) { d in
            let path = try B.image(d, "disk.qcow2", format: "qcow2")
            let l1 = Int(try P.bigEndian(path, at: 40, width: 8))
            try P.patch(path, at: l1, P.be64(1 << 63 | 1 << 40))
            return path
        },
        HostileCase(description: "qcow2 L2 entry past end of file", expected: ["L2 table 0 entry 0", "guest offset 0"],
                    info: .succeeds) { d in
            let path = try B.image(d, "disk.qcow2", format: "qcow2")
            try P.patch(path, at: try L.qcow2FirstL2Entry(path), P.be64(1 << 63 | 1 << 40))
            return path
        },
        HostileCase.changingFirstQCOW2L2Entry(description: "qcow2 L2 entry not cluster-aligned",
                                              expected: ["L2 table 0 entry 0", "not cluster-aligned"]) { $0 + 0x200 },
        HostileCase.changingFirstQCOW2L2Entry(description: "qcow2 L2 entry reserved bits",
                                              expected: ["L2 table 0 entry 0", "reserved bits"]) { $0 | 0x2 },
        HostileCase(description: "qcow2 compressed cluster that does not inflate to one cluster",
                    expected: ["compressed cluster", "guest offset 0"], info: .succeeds) { d in
            let path = try B.image(d, "disk.qcow2", format: "qcow2", compress: true)
            let entry = try P.bigEndian(path, at: try L.qcow2FirstL2Entry(path), width: 8)
            let host = Int(entry & ((1 << 54) - 1))
            try P.patch(path, at: host, [UInt8](repeating: 0xFF, count: 64))
            return path
        },
        // CVE-2024-4467: qemu-img info opened a json: external data file.
        HostileCase(description: "CVE-2024-4467 qcow2 json: data file", expected: ["data_file", "json:"]) { d in
            let path = d.file("disk.qcow2")
            try B.create(d, ["-f", "qcow2", "-o", "data_file=data.raw", "disk.qcow2", "4M"])
            let name = Array(#"json:{"driver":"raw","file":{"driver":"file","filename":"/etc/shadow"}}"#.utf8)
            let padded = name + [UInt8](repeating: 0, count: (8 - name.count % 8) % 8)
            // Header extensions start at header_length (112 for qemu 7.2): the data file name, then the end marker.
            let start = Int(try P.bigEndian(path, at: 100, width: 4))
            try P.patch(path, at: start, P.be32(0x4441_5441) + P.be32(UInt32(name.count)) + padded + [UInt8](repeating: 0, count: 8))
            return path
        },
        // CVE-2024-32498 class: a backing file naming a host file (absolute, .., symlink out, json:).
        HostileCase(description: "CVE-2024-32498 qcow2 backing file absolute path", expected: ["backing-file", "absolute"],
                    info: .reportsReference("secret.raw")) { d in
            try B.image(d, format: "qcow2", backedBy: B.secret(d))
        },
        HostileCase(description: "CVE-2024-32498 qcow2 backing file absolute path, strict mode", arguments: ["--untrusted"],
                    expected: ["backing-file", "strict mode"], info: .reportsReference("secret.raw")) { d in
            try B.image(d, format: "qcow2", backedBy: B.secret(d))
        },
        HostileCase(description: "CVE-2024-32498 qcow2 backing file with ..", expected: ["backing-file", ".."],
                    info: .reportsReference("../outside/secret.raw")) { d in
            _ = try B.secret(d)
            let images = try B.imageDirectory(d)
            let result = try runProcess(["sh", "-c", "cd \"$0\" && qemu-img create -q -f qcow2 -u -b ../outside/secret.raw -F raw disk.qcow2 4M", images])
            guard result.status == 0 else { throw KDCTError(.io, result.stderr) }
            return images + "/disk.qcow2"
        },
        HostileCase(description: "CVE-2024-32498 qcow2 backing file symlink leaving the directory",
                    expected: ["backing-file", "outside"], info: .reportsReference("link.raw")) { d in
            let secret = try B.secret(d)
            let images = try B.imageDirectory(d)
            try FileManager.default.createSymbolicLink(atPath: images + "/link.raw", withDestinationPath: secret)
            let result = try runProcess(["sh", "-c", "cd \"$0\" && qemu-img create -q -f qcow2 -u -b link.raw -F raw disk.qcow2 4M", images])
            guard result.status == 0 else { throw KDCTError(.io, result.stderr) }
            return images + "/disk.qcow2"
        },
        HostileCase(description: "CVE-2024-32498 qcow2 json: backing file", expected: ["backing-file", "json:"],
                    info: .reportsReference("json:")) { d in
            try B.image(d, format: "qcow2", backedBy: #"json:{"file.filename":"\#(try B.secret(d))"}"#)
        },
        // The error names the file at fault: the backing file whose content contradicts the declared format.
        HostileCase(description: "qcow2 backing format raw over a qcow2 backing file", expected: ["base.qcow2", "declared format raw"],
                    info: .reportsReference("base.qcow2")) { d in
            _ = try B.image(d, "base.qcow2", format: "qcow2")
            try B.create(d, ["-f", "qcow2", "-u", "-b", "base.qcow2", "-F", "raw", "disk.qcow2", "4M"])
            return d.file("disk.qcow2")
        },
        HostileCase(description: "qcow2 backing chain that loops", expected: ["loops back"],
                    info: .reportsReference("loop.qcow2")) { d in
            try B.create(d, ["-f", "qcow2", "-u", "-b", "loop.qcow2", "-F", "qcow2", "disk.qcow2", "4M"])
            try B.create(d, ["-f", "qcow2", "-u", "-b", "disk.qcow2", "-F", "qcow2", "loop.qcow2", "4M"])
            return d.file("disk.qcow2")
        },
    ]

    // MARK: QCOW (version 1)

    static let qcowCases: [HostileCase] = [
        HostileCase.patching(description: "CVE-2014-0142 qcow cluster_bits 0", expected: ["cluster_bits"],
            format: "qcow", patches: [(32, [0])]),
        // CVE-2014-0222: L2 table size computed from l2_bits overflowed.
        HostileCase.patching(description: "CVE-2014-0222 qcow l2_bits 30", expected: ["l2_bits"],
            format: "qcow", patches: [(33, [30])]),
        // CVE-2014-0223: image size overflowed the L1 size computation.
        HostileCase.patching(description: "CVE-2014-0223 qcow size 2^63", expected: ["virtual size", "limit"],
            format: "qcow", patches: [(24, P.be64(1 << 63))]),
        HostileCase.patching(description: "CVE-2014-0144 qcow l1_table_offset past end of file", expected: ["l1_table_offset"],
            format: "qcow", patches: [(40, P.be64(1 << 40))]),
        HostileCase(description: "qcow L2 entry past end of file", expected: ["L2 entry 0", "guest offset 0", "past the end"],
                    info: .succeeds) { d in
            let path = try B.image(d, "disk.qcow", format: "qcow")
            try P.patch(path, at: try L.qcowFirstL2Entry(path), P.be64(1 << 40))
            return path
        },
        HostileCase(description: "qcow compressed cluster that does not inflate to one cluster",
                    expected: ["compressed cluster", "guest offset", "inflate"], info: .succeeds) { d in
            let path = try B.image(d, "disk.qcow", format: "qcow", compress: true)
            let clusterBits = UInt64(try P.bigEndian(path, at: 32, width: 1))
            let table = try L.qcowFirstL2Entry(path)
            // The first compressed cluster (clusters of random data are stored uncompressed).
            for index in 0..<64 {
                let entry = try P.bigEndian(path, at: table + 8 * index, width: 8)
                guard entry & (1 << 63) != 0 else { continue }
                try P.patch(path, at: Int(entry & ((1 << (63 - clusterBits)) - 1)), [UInt8](repeating: 0xFF, count: 64))
                return path
            }
            throw KDCTError(.notFound, "no compressed cluster in \(path)")
        },
        HostileCase(description: "CVE-2024-32498 qcow backing file absolute path", expected: ["backing-file", "absolute"],
                    info: .reportsReference("secret.raw")) { d in
            try B.image(d, format: "qcow", backedBy: B.secret(d))
        },
    ]

    // MARK: QED

    static let qedCases: [HostileCase] = [
        HostileCase.patching(description: "CVE-2014-0142 qed cluster_size 0", expected: ["cluster size", "cluster_size"],
            format: "qed", patches: [(4, P.le32(0))]),
        HostileCase.patching(description: "CVE-2014-0142 qed table_size 0", expected: ["table_size"],
            format: "qed", patches: [(8, P.le32(0))]),
        HostileCase.patching(description: "CVE-2014-0143 qed image_size 2^62", expected: ["image_size"],
            format: "qed", patches: [(48, P.le64(1 << 62))]),
        HostileCase.patching(description: "CVE-2014-0144 qed l1_table_offset past end of file", expected: ["l1_table_offset"],
            format: "qed", patches: [(40, P.le64(1 << 40))]),
        HostileCase(description: "qed L1 entry past end of file", expected: ["L1 entry 0"]) { d in
            let path = try B.image(d, "disk.qed", format: "qed")
            let l1 = Int(try P.littleEndian(path, at: 40, width: 8))
            try P.patch(path, at: l1, P.le64(1 << 40))
            return path
        },
        HostileCase(description: "qed L2 entry past end of file", expected: ["L2 entry 0", "guest offset 0", "past the end"],
                    info: .succeeds) { d in
            let path = try B.image(d, "disk.qed", format: "qed")
            try P.patch(path, at: try L.qedFirstL2Entry(path), P.le64(1 << 40))
            return path
        },
        HostileCase(description: "qed L2 entry not cluster-aligned", expected: ["L2 entry 0", "guest offset 0", "cluster-aligned"],
                    info: .succeeds) { d in
            let path = try B.image(d, "disk.qed", format: "qed")
            let entry = try L.qedFirstL2Entry(path)
            try P.patch(path, at: entry, P.le64(try P.littleEndian(path, at: entry, width: 8) + 8))
            return path
        },
        HostileCase(description: "CVE-2024-32498 qed backing file absolute path", expected: ["backing-file", "absolute"],
                    info: .reportsReference("secret.raw")) { d in
            try B.image(d, format: "qed", backedBy: B.secret(d))
        },
        HostileCase(description: "CVE-2024-32498 qed json: backing file", expected: ["backing-file", "json:"],
                    info: .reportsReference("json:")) { d in
            try B.image(d, format: "qed", backedBy: #"json:{"file.filename":"\#(try B.secret(d))"}"#)
        },
    ]

    // MARK: VDI

    static let vdiCases: [HostileCase] = [
        HostileCase.patching(description: "CVE-2014-0142 vdi block size 0", expected: ["block size"],
            format: "vdi", patches: [(0x178, P.le32(0))]),
        HostileCase.patching(description: "CVE-2014-0143 vdi block count 0xffffffff", expected: ["block"],
            format: "vdi", patches: [(0x180, P.le32(0xFFFF_FFFF))]),
        HostileCase.patching(description: "CVE-2014-0143 vdi disk size 2^63", expected: ["size"],
            format: "vdi", patches: [(0x170, P.le64(1 << 63))]),
        HostileCase.patching(description: "CVE-2014-0144 vdi block map offset past end of file", expected: ["block map"],
            format: "vdi", patches: [(0x154, P.le32(0x7FFF_0000))]),
        HostileCase(description: "vdi block map entry past end of file", expected: ["block map entry 0", "past the end"]) { d in
            let path = try B.image(d, "disk.vdi", format: "vdi")
            let map = Int(try P.littleEndian(path, at: 0x154, width: 4))
            try P.patch(path, at: map, P.le32(0x00FF_FFFF))
            return path
        },
        HostileCase(description: "vdi differencing image, strict mode searches no parent", arguments: ["--untrusted"],
                    expected: ["parent", "strict mode"], info: .reportsReference("creation UUID")) { d in
            let path = try B.image(d, "disk.vdi", format: "vdi")
            try P.patch(path, at: 0x4C, P.le32(4))
            try P.patch(path, at: 0x1A8, [UInt8](repeating: 0x42, count: 16))
            return path
        },
    ]

    // MARK: VMDK

    static let vmdkCases: [HostileCase] = [
        // CVE-2022-47951: a VMDK descriptor naming a host file as its extent.
        HostileCase(description: "CVE-2022-47951 vmdk flat extent naming a host file", expected: ["extent", "absolute"],
                    info: .reportsReference("secret.raw")) { d in
            let secret = try B.secret(d)
            let path = d.file("disk.vmdk")
            try descriptor(createType: "monolithicFlat", extents: ["RW 2048 FLAT \"\(secret)\" 0"]).write(toFile: path, atomically: true, encoding: .utf8)
            return path
        },
        HostileCase(description: "CVE-2022-47951 vmdk flat extent naming a host file, strict mode",
                    arguments: ["--untrusted"], expected: ["createType", "monolithicFlat"]) { d in
            let secret = try B.secret(d)
            let path = d.file("disk.vmdk")
            try descriptor(createType: "monolithicFlat", extents: ["RW 2048 FLAT \"\(secret)\" 0"]).write(toFile: path, atomically: true, encoding: .utf8)
            return path
        },
        HostileCase(description: "CVE-2022-47951 vmdk extent with ..", expected: ["extent", ".."],
                    info: .reportsReference("../outside/secret.raw")) { d in
            _ = try B.secret(d)
            let path = try B.imageDirectory(d) + "/disk.vmdk"
            try descriptor(createType: "monolithicFlat", extents: ["RW 2048 FLAT \"../outside/secret.raw\" 0"]).write(toFile: path, atomically: true, encoding: .utf8)
            return path
        },
        // A descriptor cannot quote a quote, so no json: name fits in an extent line; other protocols do.
        HostileCase(description: "CVE-2022-47951 vmdk nbd: extent", expected: ["extent", "protocol prefix"],
                    info: .reportsReference("nbd:")) { d in
            let path = d.file("disk.vmdk")
            try descriptor(createType: "monolithicFlat", extents: [#"RW 2048 FLAT "nbd:localhost:10809" 0"#]).write(toFile: path, atomically: true, encoding: .utf8)
            return path
        },
        HostileCase(description: "CVE-2024-32498 vmdk parentFileNameHint absolute path, strict mode",
                    arguments: ["--untrusted"], expected: ["parent", "strict mode"],
                    info: .reportsReference("secret.raw")) { d in
            let secret = try B.secret(d)
            let path = try B.image(d, "disk.vmdk", format: "vmdk", options: "subformat=monolithicSparse")
            try L.rewriteEmbeddedDescriptor(path) {
                $0.replacingOccurrences(of: "parentCID=ffffffff", with: "parentCID=12345678\nparentFileNameHint=\"\(secret)\"")
            }
            return path
        },
        HostileCase(description: "vmdk hosted sparse file claiming a split disk, strict mode", arguments: ["--untrusted"],
                    expected: ["createType", "twoGbMaxExtentSparse"]) { d in
            let path = try B.image(d, "disk.vmdk", format: "vmdk", options: "subformat=monolithicSparse")
            try L.rewriteEmbeddedDescriptor(path) {
                $0.replacingOccurrences(of: "createType=\"monolithicSparse\"", with: "createType=\"twoGbMaxExtentSparse\"")
            }
            return path
        },
        HostileCase(description: "CVE-2014-0142 vmdk grain size 0", expected: ["grain"]) { d in
            let path = try B.image(d, "disk.vmdk", format: "vmdk", options: "subformat=monolithicSparse")
            try P.patch(path, at: 20, P.le64(0))
            return path
        },
        HostileCase(description: "CVE-2014-0143 vmdk numGTEsPerGT 0x10000000", expected: ["numGTEsPerGT"]) { d in
            let path = try B.image(d, "disk.vmdk", format: "vmdk", options: "subformat=monolithicSparse")
            try P.patch(path, at: 44, P.le32(0x1000_0000))
            return path
        },
        HostileCase(description: "CVE-2014-0143 vmdk capacity 2^60 sectors", expected: ["capacity"]) { d in
            let path = try B.image(d, "disk.vmdk", format: "vmdk", options: "subformat=monolithicSparse")
            try P.patch(path, at: 12, P.le64(1 << 60))
            return path
        },
        HostileCase(description: "CVE-2014-0144 vmdk embedded descriptor size", expected: ["descriptor"]) { d in
            let path = try B.image(d, "disk.vmdk", format: "vmdk", options: "subformat=monolithicSparse")
            try P.patch(path, at: 36, P.le64(1 << 40))
            return path
        },
        HostileCase(description: "CVE-2014-0144 vmdk grain directory past end of file", expected: ["gdOffset"]) { d in
            let path = try B.image(d, "disk.vmdk", format: "vmdk", options: "subformat=monolithicSparse")
            try P.patch(path, at: 56, P.le64(1 << 40))
            try P.patch(path, at: 48, P.le64(1 << 40))
            return path
        },
        HostileCase(description: "vmdk grain table entry past end of file",
                    expected: ["grain table 0 entry 0", "guest offset 0"]) { d in
            let path = try B.image(d, "disk.vmdk", format: "vmdk", options: "subformat=monolithicSparse")
            try P.patch(path, at: try L.vmdkFirstGrainTableEntry(path), P.le32(0x7FFF_FF80))
            return path
        }.withInfo(.succeeds),
        HostileCase(description: "vmdk compressed grain that does not inflate to one grain",
                    expected: ["grain table 0 entry 0", "inflate"], info: .succeeds) { d in
            let path = try B.image(d, "disk.vmdk", format: "vmdk", options: "subformat=streamOptimized")
            let marker = try L.vmdkFirstGrainMarker(path)
            try P.patch(path, at: marker + 14, [UInt8](repeating: 0xFF, count: 64))
            return path
        },
    ]

    static func descriptor(createType: String, extents: [String]) -> String {
        """
        # Disk DescriptorFile
        version=1
        CID=fffffffe
        parentCID=ffffffff
        createType="\(createType)"

        # Extent description
        \(extents.joined(separator: "\n"))

        ddb.adapterType = "ide"

        """
    }

    // MARK: VHD

    static let vhdCases: [HostileCase] = [
        HostileCase(description: "CVE-2014-0142 vhd block size 0", expected: ["block size"]) { d in
            let path = try B.image(d, "disk.vhd", format: "vpc", options: "subformat=dynamic")
            try P.patch(path, at: try L.vhdDynamicHeader(path) + 32, P.be32(0))
            return path
        },
        HostileCase(description: "CVE-2014-0143 vhd max table entries 0x40000000", expected: ["max table entries", "limit"]) { d in
            let path = try B.image(d, "disk.vhd", format: "vpc", options: "subformat=dynamic")
            try P.patch(path, at: try L.vhdDynamicHeader(path) + 28, P.be32(0x4000_0000))
            return path
        },
        HostileCase(description: "CVE-2014-0143 vhd current size 2^62", expected: ["limit"]) { d in
            let path = try B.image(d, "disk.vhd", format: "vpc", options: "subformat=dynamic,force_size=on")
            try L.patchVHDFooters(path) { footer in footer.replaceSubrange(48..<56, with: P.be64(1 << 62)) }
            return path
        },
        HostileCase(description: "CVE-2014-0144 vhd BAT offset past end of file", expected: ["table offset"]) { d in
            let path = try B.image(d, "disk.vhd", format: "vpc", options: "subformat=dynamic")
            try P.patch(path, at: try L.vhdDynamicHeader(path) + 16, P.be64(1 << 40))
            return path
        },
        HostileCase(description: "vhd BAT entry past end of file", expected: ["BAT entry 0", "past the end"]) { d in
            let path = try B.image(d, "disk.vhd", format: "vpc", options: "subformat=dynamic")
            let table = Int(try P.bigEndian(path, at: try L.vhdDynamicHeader(path) + 16, width: 8))
            try P.patch(path, at: table, P.be32(0x7FFF_0000))
            return path
        },
        HostileCase(description: "vhd dynamic header checksum", expected: ["checksum"]) { d in
            let path = try B.image(d, "disk.vhd", format: "vpc", options: "subformat=dynamic")
            try P.patch(path, at: try L.vhdDynamicHeader(path) + 1000, [0x01])
            return path
        },
        HostileCase(description: "CVE-2024-32498 vhd differencing disk naming a host file, strict mode",
                    arguments: ["--untrusted"], expected: ["parent", "strict mode"],
                    info: .reportsReference("secret.vhd")) { d in
            let path = try B.image(d, "disk.vhd", format: "vpc", options: "subformat=dynamic")
            try L.makeVHDDifferencing(path, parent: try B.secret(d).replacingOccurrences(of: ".raw", with: ".vhd"))
            return path
        },
        HostileCase(description: "CVE-2024-32498 vhd differencing disk naming a host file", expected: ["parent", "absolute"],
                    info: .reportsReference("secret.vhd")) { d in
            let path = try B.image(d, "disk.vhd", format: "vpc", options: "subformat=dynamic")
            try L.makeVHDDifferencing(path, parent: try B.secret(d).replacingOccurrences(of: ".raw", with: ".vhd"))
            return path
        },
    ]

    // MARK: VHDX

    static let vhdxCases: [HostileCase] = [
        // CVE-2014-0148: VHDX block size 0 (division by zero) and unchecked metadata.
        HostileCase(description: "CVE-2014-0148 vhdx block size 0", expected: ["block size"]) { d in
            let path = try B.image(d, "disk.vhdx", format: "vhdx", options: "block_size=1M")
            try P.patch(path, at: try L.vhdxFileParameters(path), P.le32(0))
            return path
        },
        HostileCase(description: "CVE-2014-0148 vhdx region table checksum", expected: ["region table checksum"]) { d in
            let path = try B.image(d, "disk.vhdx", format: "vhdx", options: "block_size=1M")
            try P.patch(path, at: 0x30000 + 8, P.le32(0x7FFF))
            try P.patch(path, at: 0x40000 + 8, P.le32(0x7FFF))
            return path
        },
        HostileCase(description: "vhdx BAT entry past end of file", expected: ["BAT entry 0"]) { d in
            let path = try B.image(d, "disk.vhdx", format: "vhdx", options: "block_size=1M")
            try P.patch(path, at: try L.vhdxRegion(path, guid: L.vhdxBATRegion), P.le64(0xFFFFF << 20 | 6))
            return path
        },
    ]

    // MARK: RAW and guest-written headers

    static let rawCases: [HostileCase] = [
        // CVE-2008-2004 class: a guest writes a qcow2 header naming a host file into its raw disk; probing the raw
        // file later finds "qcow2" with a backing file.
        HostileCase(description: "raw disk holding a guest-written qcow2 header, probed", expected: ["backing-file", "absolute"],
                    info: .reportsReference("secret.raw")) { d in
            let secret = try B.secret(d)
            try B.create(d, ["-f", "qcow2", "-u", "-b", secret, "-F", "raw", "header.qcow2", "4M"])
            let header = try ImageBytes.read(d.file("header.qcow2"))
            let path = try TestPattern.writeRaw(to: d.file("disk.raw"), size: B.guestSize)
            try P.patch(path, at: 0, Array(header.prefix(65536)))
            return path
        },
        HostileCase(description: "raw disk holding a guest-written qcow2 header, declared raw", arguments: ["-f", "raw"],
                    expected: ["declared format raw", "qcow2"]) { d in
            let secret = try B.secret(d)
            try B.create(d, ["-f", "qcow2", "-u", "-b", secret, "-F", "raw", "header.qcow2", "4M"])
            let header = try ImageBytes.read(d.file("header.qcow2"))
            let path = try TestPattern.writeRaw(to: d.file("disk.raw"), size: B.guestSize)
            try P.patch(path, at: 0, Array(header.prefix(65536)))
            return path
        },
        HostileCase(description: "junk with an image extension is not raw", expected: ["format", "matches no image format"]) { d in
            let path = d.file("disk.qcow2")
            try Data(repeating: 0x41, count: 65536).write(to: URL(fileURLWithPath: path))
            return path
        },
        HostileCase(description: "declared format differs from the content, strict mode", arguments: ["--untrusted", "-f", "vmdk"],
                    expected: ["declared format vmdk", "qcow2"]) { d in
            try B.image(d, "disk.img", format: "qcow2")
        },
    ]

    // MARK: Polyglots (strict mode, as OpenStack's format inspector)

    static let polyglotCases: [HostileCase] = [
        HostileCase(description: "qcow2 with an ISO 9660 descriptor", arguments: ["--untrusted"],
                    expected: ["more than one format", "qcow2", "ISO 9660"]) { d in
            let path = try B.image(d, "disk.img", format: "qcow2")
            try P.patch(path, at: 0x8001, Array("CD001".utf8))
            return path
        },
        HostileCase(description: "qcow2 with a VHD footer", arguments: ["--untrusted"],
                    expected: ["more than one format", "qcow2", "vhd"]) { d in
            let path = try B.image(d, "disk.img", format: "qcow2")
            try P.append(path, Array("conectix".utf8) + [UInt8](repeating: 0, count: 504))
            return path
        },
        HostileCase(description: "qcow2 with an MBR boot signature", arguments: ["--untrusted"],
                    expected: ["more than one format", "MBR"]) { d in
            let path = try B.image(d, "disk.img", format: "qcow2")
            try P.patch(path, at: 510, [0x55, 0xAA])
            return path
        },
        HostileCase(description: "qcow2 with a GPT header", arguments: ["--untrusted"],
                    expected: ["more than one format", "GPT"]) { d in
            let path = try B.image(d, "disk.img", format: "qcow2")
            try P.patch(path, at: 512, Array("EFI PART".utf8))
            return path
        },
        HostileCase(description: "qcow2 with VMDK descriptor text", arguments: ["--untrusted"],
                    expected: ["more than one format", "VMDK descriptor"]) { d in
            let path = try B.image(d, "disk.img", format: "qcow2")
            try P.patch(path, at: 1024, Array(descriptor(createType: "monolithicFlat", extents: ["RW 8 FLAT \"/etc/passwd\" 0"]).utf8))
            return path
        },
        // A guest that wrote a qcow2 header into the first sector of its fixed VHD.
        HostileCase(description: "fixed VHD holding a guest-written qcow2 header", arguments: ["--untrusted"],
                    expected: ["more than one format", "qcow2", "vhd"]) { d in
            let path = try B.image(d, "disk.vhd", format: "vpc", options: "subformat=fixed")
            try P.patch(path, at: 0, [0x51, 0x46, 0x49, 0xFB, 0, 0, 0, 3])
            return path
        },
        HostileCase(description: "VDI with a qcow2 magic", arguments: ["--untrusted"],
                    expected: ["more than one format", "qcow2", "vdi"]) { d in
            let path = try B.image(d, "disk.img", format: "vdi")
            try P.patch(path, at: 0, [0x51, 0x46, 0x49, 0xFB, 0, 0, 0, 3])
            return path
        },
    ]

    // MARK: Running

    @Test(arguments: cases)
    func hostileImageIsRefused(_ hostile: HostileCase) throws {
        let directory = try TemporaryDirectory("kdct-hostile")
        let image = try hostile.build(directory)
        let imageDirectory = FilePaths.directory(of: image)
        let before = try FileFingerprint(image)
        let listing = directoryListing(imageDirectory)
        let name = FilePaths.lastComponent(of: image)

        func expectRefused(_ command: [String], output: String?) throws {
            let (result, opened) = try ConfinedCLI.runTracingOpens(command, in: directory)
            let what = "\(hostile) \(command.first ?? "")"
            #expect(result.status == 1, "\(what): status \(result.status), stderr \(result.stderr)")
            let lines = result.stderr.split(separator: "\n")
            #expect(lines.count == 1, "\(what): \(result.stderr)")
            #expect(result.stderr.contains(name), "\(what): \(result.stderr)")
            for word in hostile.expected {
                #expect(result.stderr.contains(word), "\(what): no \"\(word)\" in \(result.stderr)")
            }
            if let output { #expect(!FileManager.default.fileExists(atPath: output), "\(what) left \(output)") }
            #expect(!opened.contains { $0.hasSuffix("secret.raw") }, "\(what) opened the referenced host file")
        }

        let output = imageDirectory + "/out.qcow2"
        try expectRefused(["convert", "-O", "qcow2"] + hostile.arguments + [image, output], output: output)
        let rawOutput = imageDirectory + "/out.raw"
        try expectRefused(["convert", "-O", "raw"] + hostile.arguments + [image, rawOutput], output: rawOutput)
        try expectRefused(["checksum"] + hostile.arguments + [image], output: nil)

        let (info, opened) = try ConfinedCLI.runTracingOpens(["info"] + hostile.arguments + [image], in: directory)
        #expect(!opened.contains { $0.hasSuffix("secret.raw") }, "\(hostile) info opened the referenced host file")
        switch hostile.info {
        case .fails:
            #expect(info.status == 1, "\(hostile) info: status \(info.status), \(info.stdout)")
            #expect(info.stderr.split(separator: "\n").count == 1, "\(hostile) info: \(info.stderr)")
            #expect(info.stderr.contains(name))
            for word in hostile.expected {
                #expect(info.stderr.contains(word), "\(hostile) info: no \"\(word)\" in \(info.stderr)")
            }
        case .succeeds:
            #expect(info.status == 0, "\(hostile) info: \(info.stderr)")
        case let .reportsReference(reference):
            #expect(info.status == 0, "\(hostile) info: \(info.stderr)")
            #expect(info.stdout.contains(reference), "\(hostile) info: \(info.stdout)")
            #expect(info.stdout.contains("(not opened)"), "\(hostile) info: \(info.stdout)")
        }

        #expect(try FileFingerprint(image) == before, "\(hostile): the input changed")
        #expect(directoryListing(imageDirectory) == listing, "\(hostile): files appeared or vanished beside the input")
    }

    /// The confinement itself must not be what fails: a valid image converts under the same limits.
    @Test func validImageConvertsUnderTheSameLimits() throws {
        let directory = try TemporaryDirectory("kdct-hostile")
        let image = try B.image(directory, "disk.qcow2", format: "qcow2", compress: true)
        let output = directory.file("out.raw")
        let result = try ConfinedCLI.run(["convert", "--untrusted", "-O", "raw", image, output])
        #expect(result.status == 0, "\(result.stderr)")
        try expectQemuIdentical(image, output, formatA: "qcow2", formatB: "raw")
    }
}

extension HostileCase {
    /// The same case with another `info` outcome.
    func withInfo(_ outcome: InfoOutcome) -> HostileCase {
        var copy = self
        copy.info = outcome
        return copy
    }
}

/// Hostile appliances (OVA/OVF): descriptors are XML parsed by Foundation's XMLParser, which the OVA fuzz harness
/// crashed (the process died) with an element name that is not valid UTF-8.
@Suite struct HostileApplianceTests {
    /// An OVF descriptor whose root element name holds bytes that are not UTF-8 (the fuzzer's finding, reduced).
    static func invalidUTF8Descriptor(_ directory: TemporaryDirectory) throws -> [UInt8] {
        let disk = try HostileBase.image(directory, "disk1.vmdk", format: "vmdk", options: "subformat=streamOptimized")
        let text = ApplianceBuilder(dir: directory).descriptor(disks: [(FilePaths.lastComponent(of: disk), HostileBase.guestSize, nil, nil)])
        var bytes = Array(text.utf8)
        guard let root = text.range(of: "<Envelope") else { throw KDCTError(.notFound, "no Envelope") }
        let index = text.utf8.distance(from: text.utf8.startIndex, to: root.lowerBound) + 6
        bytes.insert(contentsOf: [UInt8](repeating: 0xFD, count: 40), at: index)
        return bytes
    }

    @Test(arguments: ["ovf", "ova"])
    func invalidUTF8DescriptorIsAnErrorNotACrash(_ container: String) throws {
        let directory = try TemporaryDirectory("kdct-hostile")
        let descriptor = try Self.invalidUTF8Descriptor(directory)
        let input: String
        if container == "ovf" {
            input = directory.file("vm.ovf")
            try ImageBytes.write(descriptor, to: input)
        } else {
            let stage = directory.file("stage")
            try FileManager.default.createDirectory(atPath: stage, withIntermediateDirectories: true)
            try ImageBytes.write(descriptor, to: stage + "/vm.ovf")
            try FileManager.default.copyItem(atPath: directory.file("disk1.vmdk"), toPath: stage + "/disk1.vmdk")
            input = directory.file("vm.ova")
            let tar = try runProcess(["tar", "--format=ustar", "-cf", input, "-C", stage, "vm.ovf", "disk1.vmdk"])
            #expect(tar.status == 0, "\(tar.stderr)")
        }
        let before = try FileFingerprint(input)
        for command in [["info", input], ["convert", input, directory.file("out")], ["info", "--untrusted", input]] {
            let result = try ConfinedCLI.run(command)
            #expect(result.status == 1, "\(command): status \(result.status) \(result.stderr)")
            #expect(result.stderr.split(separator: "\n").count == 1, "\(command): \(result.stderr)")
            #expect(result.stderr.contains(FilePaths.lastComponent(of: input)) && result.stderr.contains("UTF-8"),
                    "\(command): \(result.stderr)")
        }
        #expect(!FileManager.default.fileExists(atPath: directory.file("out")))
        #expect(try FileFingerprint(input) == before)
    }
}
