import Foundation
import KDCTFormats
import KDCTTestSupport
import Testing

/// `check` for every format against `qemu-img check` on the same images: clean images made by qemu-img, and images
/// damaged on purpose (leaks, duplicate blocks, entries past the end of the file, overlaps). Where qemu-img checks
/// the format (qcow2, qed, vdi, vhdx, vmdk) the exit status is qemu's, and for clean images and qcow2 damage the
/// JSON is too; for vpc, qcow and raw (which qemu-img cannot check: status 63) the status is ours, stated.
@Suite struct CheckTests {
    /// `image` converted by qemu-img from a 12 MiB pattern into `format` (with `options`), in `directory`.
    static func make(_ name: String, format: String, options: [String] = [], in directory: TemporaryDirectory) throws -> String {
        let raw = directory.file("pattern.raw")
        if !FileManager.default.fileExists(atPath: raw) { try TestPattern.writeRaw(to: raw, size: 12 << 20) }
        let path = directory.file(name)
        try qemuImg(["convert", "-f", "raw", "-O", format] + options + [raw, path])
        return path
    }

    /// Both tools' `check --output json` of `image`: the exit statuses, and the JSON objects.
    static func checkBoth(_ image: String) throws -> (ours: ProcessResult, theirs: ProcessResult, oursJSON: NSDictionary?, theirsJSON: NSDictionary?) {
        let ours = try CLI.run(["check", "--output", "json", image])
        let theirs = try runProcess(["qemu-img", "check", "--output", "json", image])
        let parse = { (text: String) in try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? NSDictionary }
        return (ours, theirs, parse(ours.stdout), parse(theirs.stdout))
    }

    /// Our check of `image` has qemu-img's exit status `expected`; with `sameJSON`, the same JSON object too.
    static func expectLikeQemu(_ image: String, status expected: Int32, sameJSON: Bool = true,
                               sourceLocation: SourceLocation = #_sourceLocation) throws {
        let (ours, theirs, oursJSON, theirsJSON) = try checkBoth(image)
        #expect(theirs.status == expected, "qemu-img check \(image): \(theirs.status) \(theirs.stderr)", sourceLocation: sourceLocation)
        #expect(ours.status == expected, "kdct-native check \(image): \(ours.status)\n\(ours.stdout)\n\(ours.stderr)",
                sourceLocation: sourceLocation)
        if sameJSON {
            #expect(oursJSON != nil && oursJSON == theirsJSON, "JSON differs for \(image):\nours \(ours.stdout)\nqemu \(theirs.stdout)",
                    sourceLocation: sourceLocation)
        }
    }

    @Test func cleanImagesOfEveryFormatCheckAsQemuChecksThem() throws {
        let dir = try TemporaryDirectory("kdct-check")
        let checkedByQemu = [
            try Self.make("plain.qcow2", format: "qcow2", in: dir),
            try Self.make("c4k.qcow2", format: "qcow2", options: ["-o", "cluster_size=4k"], in: dir),
            try Self.make("compressed.qcow2", format: "qcow2", options: ["-c"], in: dir),
            try Self.make("extl2.qcow2", format: "qcow2", options: ["-o", "extended_l2=on"], in: dir),
            try Self.make("v2.qcow2", format: "qcow2", options: ["-o", "compat=0.10"], in: dir),
            try Self.make("disk.qed", format: "qed", in: dir),
            try Self.make("disk.vdi", format: "vdi", in: dir),
            try Self.make("static.vdi", format: "vdi", options: ["-o", "static=on"], in: dir),
            try Self.make("disk.vhdx", format: "vhdx", in: dir),
            try Self.make("sparse.vmdk", format: "vmdk", in: dir),
            try Self.make("stream.vmdk", format: "vmdk", options: ["-o", "subformat=streamOptimized"], in: dir),
            try Self.make("split.vmdk", format: "vmdk", options: ["-o", "subformat=twoGbMaxExtentSparse"], in: dir),
        ]
        // Internal snapshots (shared L2 tables and clusters) and a persistent bitmap count as qemu counts them.
        let snapshots = try Self.make("snapshots.qcow2", format: "qcow2", in: dir)
        try qemuImg("snapshot", "-c", "one", snapshots)
        _ = try runProcess(["qemu-io", "-f", "qcow2", "-c", "write -P 5 1M 3M", snapshots])
        try qemuImg("snapshot", "-c", "two", snapshots)
        try qemuImg("bitmap", "--add", snapshots, "b0")
        for image in checkedByQemu + [snapshots] { try Self.expectLikeQemu(image, status: 0) }

        // The human summary, byte for byte (qcow2: statistics and the image end).
        for image in [checkedByQemu[0], checkedByQemu[2], snapshots] {
            let ours = try CLI.run(["check", image])
            let theirs = try runProcess(["qemu-img", "check", image])
            #expect(ours.stdout == theirs.stdout, "ours:\n\(ours.stdout)\nqemu-img:\n\(theirs.stdout)")
        }

        // Formats qemu-img does not check (status 63): clean, status 0.
        let notCheckedByQemu = [try Self.make("disk.vhd", format: "vpc", in: dir), try Self.make("disk.qcow", format: "qcow", in: dir),
                                dir.file("pattern.raw")]
        for image in notCheckedByQemu {
            #expect(try runProcess(["qemu-img", "check", image]).status == 63)
            let ours = try CLI.run(["check", "--output", "json", image])
            #expect(ours.status == 0, "\(image): \(ours.stdout) \(ours.stderr)")
            #expect(ours.stdout.contains("\"check-errors\": 0"))
        }
        for fixture in ["pattern.vdi", "pattern.vhd", "pattern-fixed.vhd", "pattern.vhdx", "pattern.vmdk", "pattern-stream.vmdk",
                        "pattern.qcow", "pattern.qed", "pattern-v2.qcow2", "pattern-extl2.qcow2", "pattern-zstd.qcow2"] {
            let result = try CLI.run(["check", Fixtures.path(fixture)])
            #expect(result.status == 0, "\(fixture): \(result.stdout) \(result.stderr)")
        }
    }

    // MARK: Damaged images

    /// A qcow2 image's refcount of cluster `cluster` set to `value` (16-bit refcounts, cluster in refcount block 0).
    static func setQCOW2Refcount(_ path: String, cluster: Int, to value: UInt16) throws {
        let table = try ImageBytes.bigEndian(path, at: 48, width: 8)
        let block = try ImageBytes.bigEndian(path, at: Int(table), width: 8)
        try ImageBytes.patch(path, at: Int(block) + 2 * cluster, ImageBytes.be16(value))
    }

    /// The host cluster of guest cluster 0 of a qcow2 image with 64 KiB clusters.
    static func firstDataCluster(_ path: String) throws -> Int {
        let l1 = try ImageBytes.bigEndian(path, at: 40, width: 8)
        let l2 = try ImageBytes.bigEndian(path, at: Int(l1), width: 8) & 0x00FF_FFFF_FFFF_FE00
        let data = try ImageBytes.bigEndian(path, at: Int(l2), width: 8) & 0x00FF_FFFF_FFFF_FE00
        return Int(data >> 16)
    }

    @Test func damagedQCOW2ChecksAsQemuChecksIt() throws {
        let dir = try TemporaryDirectory("kdct-check-qcow2")
        // A refcount above the references: a leak (3), the same count and JSON as qemu.
        let leak = try Self.make("leak.qcow2", format: "qcow2", in: dir)
        try Self.setQCOW2Refcount(leak, cluster: 0, to: 2)
        try Self.expectLikeQemu(leak, status: 3)
        // A data cluster's refcount 0: a corruption (2), with its COPIED flag error.
        let corrupt = try Self.make("corrupt.qcow2", format: "qcow2", in: dir)
        try Self.setQCOW2Refcount(corrupt, cluster: try Self.firstDataCluster(corrupt), to: 0)
        try Self.expectLikeQemu(corrupt, status: 2)
        let lines = try CLI.run(["check", corrupt]).stderr
        #expect(lines.contains("refcount=0 reference=1"), "\(lines)")
        // Both at once: corruption wins.
        try Self.setQCOW2Refcount(corrupt, cluster: 0, to: 3)
        try Self.expectLikeQemu(corrupt, status: 2)
        // A refcount table past the end of the file: every refcount reads 0 (2).
        let broken = try Self.make("broken.qcow2", format: "qcow2", in: dir)
        try ImageBytes.patch(broken, at: 48, ImageBytes.be64(1 << 40))
        try Self.expectLikeQemu(broken, status: 2, sameJSON: false)
        // A header that does not decode: neither tool can check (1).
        let unreadable = try Self.make("unreadable.qcow2", format: "qcow2", in: dir)
        try ImageBytes.patch(unreadable, at: 20, ImageBytes.be32(40))
        try Self.expectLikeQemu(unreadable, status: 1, sameJSON: false)
    }

    @Test func damagedQEDChecksAsQemuChecksIt() throws {
        let dir = try TemporaryDirectory("kdct-check-qed")
        let clean = try Self.make("clean.qed", format: "qed", in: dir)
        let clusterSize = Int(try ImageBytes.littleEndian(clean, at: 4, width: 4))
        let l1 = Int(try ImageBytes.littleEndian(clean, at: 40, width: 8))
        let l2 = Int(try ImageBytes.littleEndian(clean, at: l1, width: 8))
        // An unused cluster at the end of the file: a leak.
        let leak = dir.file("leak.qed")
        try FileManager.default.copyItem(atPath: clean, toPath: leak)
        try ImageBytes.append(leak, [UInt8](repeating: 0, count: clusterSize))
        try Self.expectLikeQemu(leak, status: 3)
        // Two L2 entries naming one data cluster: a corruption.
        let duplicate = dir.file("duplicate.qed")
        try FileManager.default.copyItem(atPath: clean, toPath: duplicate)
        let first = try ImageBytes.littleEndian(duplicate, at: l2, width: 8)
        try ImageBytes.patch(duplicate, at: l2 + 8 * 3, ImageBytes.le64(first))
        try Self.expectLikeQemu(duplicate, status: 2, sameJSON: false)
        // A data cluster past the end of the file: a corruption.
        let pastEnd = dir.file("past-end.qed")
        try FileManager.default.copyItem(atPath: clean, toPath: pastEnd)
        let size = UInt64(try FileFingerprint(pastEnd).size)
        try ImageBytes.patch(pastEnd, at: l2 + 8 * 5, ImageBytes.le64((size / UInt64(clusterSize) + 4) * UInt64(clusterSize)))
        try Self.expectLikeQemu(pastEnd, status: 2, sameJSON: false)
    }

    @Test func damagedVDIChecksAsQemuChecksIt() throws {
        let dir = try TemporaryDirectory("kdct-check-vdi")
        let clean = try Self.make("clean.vdi", format: "vdi", in: dir)
        let mapOffset = Int(try ImageBytes.littleEndian(clean, at: 0x154, width: 4))
        // Two blocks in one slot.
        let duplicate = dir.file("duplicate.vdi")
        try FileManager.default.copyItem(atPath: clean, toPath: duplicate)
        try ImageBytes.patch(duplicate, at: mapOffset + 4, ImageBytes.le32(UInt32(try ImageBytes.littleEndian(duplicate, at: mapOffset, width: 4))))
        try Self.expectLikeQemu(duplicate, status: 2, sameJSON: false)
        #expect(try CLI.run(["check", duplicate]).stderr.contains("already used by entry 0"))
        // The header's allocated block count off by one.
        let count = dir.file("count.vdi")
        try FileManager.default.copyItem(atPath: clean, toPath: count)
        let allocated = UInt32(try ImageBytes.littleEndian(count, at: 0x184, width: 4))
        try ImageBytes.patch(count, at: 0x184, ImageBytes.le32(allocated + 1))
        try Self.expectLikeQemu(count, status: 2)
        // A block past the end of the file (qemu-img does not look): a corruption here, reported, not an open error.
        let truncated = dir.file("truncated.vdi")
        try FileManager.default.copyItem(atPath: clean, toPath: truncated)
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: truncated))
        try handle.truncate(atOffset: UInt64(try FileFingerprint(truncated).size - (1 << 20)))
        try handle.close()
        let result = try CLI.run(["check", truncated])
        #expect(result.status == 2, "\(result.stdout) \(result.stderr)")
        #expect(result.stderr.contains("past the end of the file"))
    }

    @Test func damagedVHDXChecksAsQemuChecksIt() throws {
        let dir = try TemporaryDirectory("kdct-check-vhdx")
        let clean = try Self.make("clean.vhdx", format: "vhdx", in: dir)
        // The last block cut off: qemu-img reports the BAT entry past the end of the file (2), so do we.
        let truncated = dir.file("truncated.vhdx")
        try FileManager.default.copyItem(atPath: clean, toPath: truncated)
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: truncated))
        try handle.truncate(atOffset: UInt64(try FileFingerprint(truncated).size - (6 << 20)))
        try handle.close()
        try Self.expectLikeQemu(truncated, status: 2, sameJSON: false)
        // Two payload blocks at one file offset (qemu-img does not compare entries with each other): 2 here.
        let overlap = dir.file("overlap.vhdx")
        try FileManager.default.copyItem(atPath: clean, toPath: overlap)
        let batOffset = try vhdxBATOffset(overlap)
        try ImageBytes.patch(overlap, at: batOffset + 8, ImageBytes.le64(try ImageBytes.littleEndian(overlap, at: batOffset, width: 8)))
        let result = try CLI.run(["check", overlap])
        #expect(result.status == 2, "\(result.stdout) \(result.stderr)")
        #expect(result.stderr.contains("overlap"))
    }

    /// The BAT's file offset from the first region table (type GUID 2DC27766-F623-4200-9D64-115E9BFD4A08).
    func vhdxBATOffset(_ path: String) throws -> Int {
        let bytes = try ImageBytes.read(path)
        let batGUID: [UInt8] = [0x66, 0x77, 0xC2, 0x2D, 0x23, 0xF6, 0x00, 0x42, 0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD, 0x4A, 0x08]
        let table = 192 << 10
        let count = Int(try ImageBytes.littleEndian(path, at: table + 8, width: 4))
        for entry in 0..<count {
            let at = table + 16 + entry * 32
            if Array(bytes[at..<(at + 16)]) == batGUID {
                return Int(try ImageBytes.littleEndian(path, at: at + 16, width: 8))
            }
        }
        throw KDCTError(.corrupt, "no BAT region in \(path)")
    }

    @Test func damagedVMDKChecksAsQemuChecksIt() throws {
        let dir = try TemporaryDirectory("kdct-check-vmdk")
        let clean = try Self.make("clean.vmdk", format: "vmdk", in: dir)
        let directory = Int(try ImageBytes.littleEndian(clean, at: 56, width: 8)) * 512
        let table = Int(try ImageBytes.littleEndian(clean, at: directory, width: 4)) * 512
        // A grain past the end of the file: qemu-img's one VMDK check, which stops there ("Check failed", 1);
        // here the check goes on and reports the corruption (2).
        let pastEnd = dir.file("past-end.vmdk")
        try FileManager.default.copyItem(atPath: clean, toPath: pastEnd)
        let sectors = UInt32(try FileFingerprint(pastEnd).size / 512)
        try ImageBytes.patch(pastEnd, at: table, ImageBytes.le32(sectors + 128))
        let theirs = try runProcess(["qemu-img", "check", pastEnd])
        #expect(theirs.status == 1 && theirs.stderr.contains("points after EOF"), "\(theirs.stderr)")
        let ours = try CLI.run(["check", pastEnd])
        #expect(ours.status == 2 && ours.stderr.contains("past the end of the file"), "\(ours.stdout) \(ours.stderr)")
        // Two grain table entries naming one grain (qemu-img does not look): 2 here.
        let duplicate = dir.file("duplicate.vmdk")
        try FileManager.default.copyItem(atPath: clean, toPath: duplicate)
        try ImageBytes.patch(duplicate, at: table + 4 * 3, ImageBytes.le32(UInt32(try ImageBytes.littleEndian(duplicate, at: table, width: 4))))
        #expect(try runProcess(["qemu-img", "check", duplicate]).status == 0)
        let result = try CLI.run(["check", duplicate])
        #expect(result.status == 2, "\(result.stdout) \(result.stderr)")
        #expect(result.stderr.contains("grain 3 at file offset") && result.stderr.contains("overlaps"), "\(result.stderr)")
        // A grain directory entry past the end of the file: recorded while opening, a corruption.
        let badTable = dir.file("bad-table.vmdk")
        try FileManager.default.copyItem(atPath: clean, toPath: badTable)
        try ImageBytes.patch(badTable, at: directory, ImageBytes.le32(sectors + 1024))
        let opened = try CLI.run(["check", badTable])
        #expect(opened.status == 2, "\(opened.stdout) \(opened.stderr)")
        #expect(opened.stderr.contains("grain directory entry 0"))
    }

    @Test func damagedVHDAndQCOWAreCheckedHere() throws {
        let dir = try TemporaryDirectory("kdct-check-vhd")
        // VHD: two BAT entries naming one block, and a damaged footer at the end of the file.
        let vhd = try Self.make("overlap.vhd", format: "vpc", in: dir)
        let header = Int(try ImageBytes.bigEndian(vhd, at: 16, width: 8))
        let bat = Int(try ImageBytes.bigEndian(vhd, at: header + 16, width: 8))
        try ImageBytes.patch(vhd, at: bat + 4, ImageBytes.be32(UInt32(try ImageBytes.bigEndian(vhd, at: bat, width: 4))))
        var result = try CLI.run(["check", vhd])
        #expect(result.status == 2, "\(result.stdout) \(result.stderr)")
        #expect(result.stderr.contains("BAT entries 0 and 1"), "\(result.stderr)")
        let footer = try Self.make("footer.vhd", format: "vpc", in: dir)
        let size = try FileFingerprint(footer).size
        try ImageBytes.patch(footer, at: size - 512 + 40, [0xFF])
        result = try CLI.run(["check", footer])
        #expect(result.status == 2 && result.stderr.contains("footer at the end"), "\(result.stdout) \(result.stderr)")
        // QCOW v1: two L2 entries naming one cluster.
        let qcow = try Self.make("duplicate.qcow", format: "qcow", in: dir)
        let l1 = Int(try ImageBytes.bigEndian(qcow, at: 40, width: 8))
        let l2 = Int(try ImageBytes.bigEndian(qcow, at: l1, width: 8))
        try ImageBytes.patch(qcow, at: l2 + 8 * 2, ImageBytes.be64(try ImageBytes.bigEndian(qcow, at: l2, width: 8)))
        result = try CLI.run(["check", "--output", "json", qcow])
        #expect(result.status == 2, "\(result.stdout) \(result.stderr)")
        #expect(result.stdout.contains("\"corruptions\": 1"), "\(result.stdout)")
    }

    // MARK: Repair

    @Test func leaksAreRepairedInACopyThatReplacesTheImage() throws {
        let dir = try TemporaryDirectory("kdct-check-repair")
        let image = try Self.make("leak.qcow2", format: "qcow2", in: dir)
        let reference = dir.file("reference.qcow2")
        try FileManager.default.copyItem(atPath: image, toPath: reference)
        try Self.setQCOW2Refcount(image, cluster: 0, to: 3)
        let allocatedBefore = try Self.allocatedBytes(image)
        let result = try CLI.run(["check", "-r", "leaks", image])
        #expect(result.status == 0, "\(result.stdout) \(result.stderr)")
        #expect(result.stdout.contains("1 leaked clusters\n    0 corruptions"), "\(result.stdout)")
        try expectQemuCheckClean(image)
        try expectQemuIdentical(reference, image, formatA: "qcow2", formatB: "qcow2")
        #expect(try Self.allocatedBytes(image) <= allocatedBefore, "the repaired copy is not sparse")
        #expect(directoryListing(dir.path).allSatisfy { !$0.hasSuffix(".part") })
        // JSON: leaks-fixed, as qemu-img prints it.
        try Self.setQCOW2Refcount(image, cluster: 0, to: 2)
        let json = try CLI.run(["check", "-r", "all", "--output", "json", image])
        #expect(json.status == 0 && json.stdout.contains("\"leaks-fixed\": 1"), "\(json.stdout) \(json.stderr)")
    }

    @Test func repairsAreRefusedWhereTheyCannotBeSafe() throws {
        let dir = try TemporaryDirectory("kdct-check-refuse")
        // Corruptions: nothing is written, the corruption is reported.
        let corrupt = try Self.make("corrupt.qcow2", format: "qcow2", in: dir)
        try Self.setQCOW2Refcount(corrupt, cluster: try Self.firstDataCluster(corrupt), to: 0)
        try Self.setQCOW2Refcount(corrupt, cluster: 0, to: 2)
        var before = try FileFingerprint(corrupt)
        var result = try CLI.run(["check", "-r", "leaks", corrupt])
        #expect(result.status == 2, "\(result.stdout) \(result.stderr)")
        #expect(result.stderr.contains("not repaired"))
        #expect(try FileFingerprint(corrupt) == before)
        // Another format: refused, unchanged.
        let vdi = try Self.make("disk.vdi", format: "vdi", in: dir)
        before = try FileFingerprint(vdi)
        result = try CLI.run(["check", "-r", "leaks", vdi])
        #expect(result.status == 1 && result.stderr.contains("only to qcow2"), "\(result.stderr)")
        #expect(try FileFingerprint(vdi) == before)
        // An image a process holds (qemu-io keeps it open, as a running VM would): refused, unchanged.
        let held = try Self.make("held.qcow2", format: "qcow2", in: dir)
        try Self.setQCOW2Refcount(held, cluster: 0, to: 2)
        before = try FileFingerprint(held)
        try HeldImage.while(held) {
            let refused = try CLI.run(["check", "-r", "leaks", held])
            #expect(refused.status == 1 && refused.stderr.contains("in use"), "\(refused.stderr)")
        }
        #expect(try FileFingerprint(held) == before)
    }

    /// Bytes the file occupies on disk.
    static func allocatedBytes(_ path: String) throws -> Int {
        var st = stat()
        guard stat(path, &st) == 0 else { throw KDCTError(.io, "stat \(path)") }
        return Int(st.st_blocks) * 512
    }
}

/// An image held open by qemu-io in interactive mode, with qemu's locks, as a running VM holds its disk.
enum HeldImage {
    static func `while`(_ path: String, _ body: () throws -> Void) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["qemu-io", path]
        let input = Pipe()
        let errors = Pipe()
        process.standardInput = input
        process.standardOutput = FileHandle.nullDevice
        process.standardError = errors
        try process.run()
        defer {
            try? input.fileHandleForWriting.close()
            process.waitUntilExit()
        }
        // qemu-io takes its locks (open file description locks) when it opens the image; wait until they show
        // in /proc/locks (a loaded machine may take seconds). Watching passively matters: probing with
        // `qemu-img info` opens the image too, and a probe that holds it at the moment qemu-io opens makes
        // qemu-io's own lock fail, after which it sits at its prompt without the image.
        var held = false
        for _ in 0..<600 where !held && process.isRunning {
            held = try hasOFDLocks(path)
            if !held { usleep(100_000) }
        }
        if !held { try? input.fileHandleForWriting.close() }
        let reason = held ? "" : String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(held, "qemu-io never took its locks on \(path): \(reason)")
        try body()
    }

    /// Whether any open file description lock is held on the file (qemu's image locking uses them).
    static func hasOFDLocks(_ path: String) throws -> Bool {
        var st = stat()
        guard stat(path, &st) == 0 else { throw KDCTError(.io, "stat \(path)") }
        // A /proc/locks line: "1: OFDLCK ADVISORY READ -1 fd:01:1234 100 100"; the device is
        // major:minor in hex, the inode in decimal.
        let suffix = ":\(st.st_ino)"
        let locks = try String(contentsOfFile: "/proc/locks", encoding: .utf8)
        return locks.split(separator: "\n").contains { line in
            let fields = line.split(separator: " ")
            return fields.count > 5 && fields[1] == "OFDLCK" && fields[5].hasSuffix(suffix)
        }
    }
}
