import Foundation
import KDCTFormats
import KDCTTestSupport
import Testing

/// Strict mode (`--untrusted`) beyond refusing hostile images: `info` reads only metadata, valid images still
/// open, and `check` survives hostile refcount structures.
@Suite struct StrictModeTests {
    /// A guest with random (incompressible) data in three places, so every format stores real data clusters.
    static func writeGuest(_ path: String) throws {
        var bytes = [UInt8](repeating: 0, count: 8 << 20)
        for start in [0, 3 << 20, (8 << 20) - 65536] {
            let run = TestPattern.bytes(offset: UInt64(start), length: 65536, kind: "r")
            bytes.replaceSubrange(start..<(start + 65536), with: run)
        }
        try ImageBytes.write(bytes, to: path)
    }

    /// Host byte ranges holding guest data, from qemu-img map (the oracle); for VHDX, whose map qemu gives without
    /// offsets, from the BAT's fully-present payload entries read directly (no differencing disk here, so no
    /// sector bitmap entries).
    static func dataRanges(_ path: String, format: String) throws -> [Range<UInt64>] {
        if format == "vhdx" {
            let blockSize = try ImageBytes.littleEndian(path, at: try HostileLayout.vhdxFileParameters(path), width: 4)
            let bat = try HostileLayout.vhdxRegion(path, guid: HostileLayout.vhdxBATRegion)
            var ranges: [Range<UInt64>] = []
            for index in 0..<64 {
                let entry = try ImageBytes.littleEndian(path, at: bat + 8 * index, width: 8)
                let offset = (entry >> 20) << 20
                if entry & 7 == 6 { ranges.append(offset..<(offset + blockSize)) }
            }
            return ranges
        }
        let map = try qemuImg("map", "--output=json", "-f", format, path)
        let entries = try JSONSerialization.jsonObject(with: Data(map.stdout.utf8)) as? [[String: Any]] ?? []
        return entries.compactMap { entry in
            guard entry["data"] as? Bool == true, let offset = entry["offset"] as? Int, let length = entry["length"] as? Int
            else { return nil }
            return UInt64(offset)..<UInt64(offset + length)
        }
    }

    /// `info --untrusted` interprets only metadata: apart from the probes (reads at offset 0 of at most 64 KiB and
    /// the last 512/511 bytes, looked at for signatures only), no read of the image touches a host range that holds guest data.
    @Test(arguments: ["qcow2", "qcow", "qed", "vdi", "vmdk", "vpc", "vhdx"])
    func infoReadsOnlyMetadata(_ format: String) throws {
        let directory = try TemporaryDirectory("kdct-strict")
        let raw = directory.file("guest.raw")
        try Self.writeGuest(raw)
        let image = directory.file("disk.\(format == "vpc" ? "vhd" : format)")
        try qemuImg("convert", "-f", "raw", "-O", format, raw, image)
        let data = try Self.dataRanges(image, format: format)
        #expect(!data.isEmpty)
        let size = try ReadOnlyFile(path: image).size

        let trace = directory.file("pread.log")
        let result = try runProcess(["strace", "-y", "-s", "0", "-e", "trace=pread64", "-o", trace, CLI.binary,
                                     "info", "--untrusted", image])
        #expect(result.status == 0, "\(result.stderr)")
        let canonical = FilePaths.canonical(image) ?? image
        let lines = try String(contentsOfFile: trace, encoding: .utf8).split(separator: "\n")
            .filter { $0.contains("<\(canonical)>") }
        #expect(!lines.isEmpty, "strace saw no read of \(image)")
        for line in lines {
            // pread64(3</path>, ""..., COUNT, OFFSET) = N
            let call = line.components(separatedBy: ") =").first ?? ""
            let arguments = call.split(separator: ",").suffix(2).map { $0.filter(\.isNumber) }
            guard arguments.count == 2, let count = UInt64(arguments[0]), let offset = UInt64(arguments[1]) else {
                Issue.record("cannot parse \(line)")
                continue
            }
            // Probes: the format probe's 64 KiB and the CLI's appliance check (4 KiB) at offset 0, and the tail.
            let isProbe = (offset == 0 && count <= UInt64(FormatProbe.headSize))
                || (count == 512 && offset == size - 512) || (count == 511 && offset == size - 511)
            if isProbe { continue }
            let read = offset..<(offset + count)
            for range in data where range.overlaps(read) {
                Issue.record("\(format): info read \(count) bytes at \(offset), overlapping guest data at \(range)")
            }
        }
    }

    /// CVE-2014-0146 class for `check`: a refcount table past the end of the file is a one-line error (exit 1); a
    /// refcount block pointer past the end is reported as corruption (exit 2), never followed.
    @Test func checkSurvivesHostileRefcounts() throws {
        let directory = try TemporaryDirectory("kdct-strict")
        let image = try HostileBase.image(directory, "disk.qcow2", format: "qcow2")
        let table = directory.file("table.qcow2")
        try FileManager.default.copyItem(atPath: image, toPath: table)
        try ImageBytes.patch(table, at: 48, ImageBytes.be64(1 << 40))
        try ImageBytes.patch(table, at: 56, ImageBytes.be32(0x7FFF_FFFF))
        let before = try FileFingerprint(table)
        let tableResult = try ConfinedCLI.run(["check", table])
        #expect(tableResult.status == 1, "\(tableResult.stdout) \(tableResult.stderr)")
        #expect(tableResult.stderr.contains("table.qcow2") && tableResult.stderr.contains("refcount table"))
        #expect(tableResult.stderr.split(separator: "\n").count == 1)
        #expect(try FileFingerprint(table) == before)

        let block = directory.file("block.qcow2")
        try FileManager.default.copyItem(atPath: image, toPath: block)
        let refcountTable = Int(try ImageBytes.bigEndian(block, at: 48, width: 8))
        try ImageBytes.patch(block, at: refcountTable, ImageBytes.be64(1 << 40))
        let blockBefore = try FileFingerprint(block)
        let blockResult = try ConfinedCLI.run(["check", block])
        #expect(blockResult.status == 2, "\(blockResult.stdout) \(blockResult.stderr)")
        // Each problem is an `ERROR` line on stderr, as qemu-img prints it.
        #expect(blockResult.stderr.contains("ERROR refcount block 0"), "\(blockResult.stderr)")
        #expect(try FileFingerprint(block) == blockBefore)
    }

    /// Strict mode still reads what it should: the single-file formats convert identically to qemu's reading.
    @Test(arguments: [("qcow2", ""), ("qcow", ""), ("qed", ""), ("vdi", ""), ("vmdk", "subformat=monolithicSparse"),
                      ("vmdk", "subformat=streamOptimized")])
    func validImagesOpenInStrictMode(_ format: String, _ options: String) throws {
        let directory = try TemporaryDirectory("kdct-strict")
        let raw = directory.file("guest.raw")
        try Self.writeGuest(raw)
        let image = directory.file("disk.\(format)")
        try qemuImg(["convert", "-f", "raw", "-O", format] + (options.isEmpty ? [] : ["-o", options]) + [raw, image])
        let output = directory.file("out.raw")
        let result = try ConfinedCLI.run(["convert", "--untrusted", "-f", format, image, output])
        #expect(result.status == 0, "\(result.stderr)")
        try expectQemuIdentical(raw, output, formatA: "raw", formatB: "raw")
    }

    /// A raw disk that is a partitioned disk (MBR boot signature, GPT header) or an ISO image is not ambiguous: it
    /// matches no image format, so strict mode reads it as raw.
    @Test func rawPartitionedDiskIsNotAPolyglot() throws {
        let directory = try TemporaryDirectory("kdct-strict")
        let raw = directory.file("disk.raw")
        try Self.writeGuest(raw)
        try ImageBytes.patch(raw, at: 510, [0x55, 0xAA])
        try ImageBytes.patch(raw, at: 512, Array("EFI PART".utf8))
        try ImageBytes.patch(raw, at: 0x8001, Array("CD001".utf8))
        let result = try ConfinedCLI.run(["convert", "--untrusted", raw, directory.file("out.qcow2")])
        #expect(result.status == 0, "\(result.stderr)")
    }

    /// Strict mode reaches the disks inside an OVA: a polyglot disk member (a qcow2 with a VHD footer) is refused
    /// with --untrusted and converts without it.
    @Test func strictModeAppliesToApplianceDisks() throws {
        let directory = try TemporaryDirectory("kdct-strict")
        let disk = try HostileBase.image(directory, "disk.qcow2", format: "qcow2")
        try ImageBytes.append(disk, Array("conectix".utf8) + [UInt8](repeating: 0, count: 504))
        let ova = try ApplianceBuilder(dir: directory).ova(disks: [disk], uris: [nil], manifest: .none)
        let before = try FileFingerprint(ova)
        let strict = try ConfinedCLI.run(["convert", "--untrusted", ova, directory.file("strict-out")])
        #expect(strict.status == 1, "\(strict.stdout) \(strict.stderr)")
        #expect(strict.stderr.contains("more than one format"), "\(strict.stderr)")
        #expect(strict.stderr.split(separator: "\n").count == 1, "\(strict.stderr)")
        let relaxed = try ConfinedCLI.run(["convert", ova, directory.file("out")])
        #expect(relaxed.status == 0, "\(relaxed.stderr)")
        #expect(try FileFingerprint(ova) == before)
    }
}
