import Foundation
import KDCTFormats
import KDCTTestSupport
import Testing

/// `create` against `qemu-img create` with the same arguments: the files are compared byte for byte (header fields,
/// extensions, refcount structures, L1/L2 tables and the file's length), then `qemu-img check` and the
/// `qemu-img info` JSON; where qemu-img moves its refcount table (more refcount blocks than one table cluster
/// names), the layout is ours and only check, info and content are compared.
@Suite struct CreateTests {
    /// Runs `command` in `directory` (relative names, as a user types them).
    static func run(in directory: String, _ command: [String]) throws -> ProcessResult {
        try runProcess(["sh", "-c", "cd \"$0\" && exec \"$@\"", directory] + command)
    }

    /// `qemu-img info --output json` without the keys that name the file or measure its allocation.
    static func info(_ path: String) throws -> NSDictionary {
        let text = try qemuImg("info", "--output", "json", path).stdout
        let object = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] ?? [:]
        return NSDictionary(dictionary: object.filter { !["filename", "actual-size"].contains($0.key) })
    }

    /// Creates `qemu-<name>` with qemu-img and `ours-<name>` with kdct-native from the same arguments; compares.
    func expectCreatesLikeQemu(_ name: String, _ arguments: [String], size: String?, byteIdentical: Bool = true,
                               in dir: TemporaryDirectory, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let tail = size.map { [$0] } ?? []
        let theirs = try Self.run(in: dir.path, ["qemu-img", "create"] + arguments + ["qemu-" + name] + tail)
        let ours = try Self.run(in: dir.path, [CLI.binary, "create"] + arguments + ["ours-" + name] + tail)
        #expect(theirs.status == 0 && ours.status == 0, "\(name): qemu \(theirs.stderr) / ours \(ours.stderr)",
                sourceLocation: sourceLocation)
        // The same `Formatting ...` line.
        #expect(ours.stdout == theirs.stdout.replacingOccurrences(of: "'qemu-\(name)'", with: "'ours-\(name)'"),
                "ours: \(ours.stdout)qemu-img: \(theirs.stdout)", sourceLocation: sourceLocation)
        let (qemuFile, ourFile) = (dir.file("qemu-" + name), dir.file("ours-" + name))
        if byteIdentical {
            #expect(try FileFingerprint(qemuFile).sha256 == FileFingerprint(ourFile).sha256,
                    "\(name) \(arguments): not the same bytes as qemu-img create", sourceLocation: sourceLocation)
            #expect(try FileFingerprint(qemuFile).size == FileFingerprint(ourFile).size, sourceLocation: sourceLocation)
        }
        if arguments.contains("qcow2") { try expectQemuCheckClean(ourFile, sourceLocation: sourceLocation) }
        #expect(try Self.info(qemuFile) == Self.info(ourFile), "\(name): info differs", sourceLocation: sourceLocation)
        try expectQemuIdentical(qemuFile, ourFile, sourceLocation: sourceLocation)
    }

    @Test func qcow2ImagesAreQemuImgCreatesImages() throws {
        let dir = try TemporaryDirectory("kdct-create")
        let cases: [(String, [String], String?)] = [
            ("default.qcow2", [], "1G"), ("empty.qcow2", [], "0"), ("odd.qcow2", [], "1000"), ("huge.qcow2", [], "64T"),
            ("c512.qcow2", ["-o", "cluster_size=512"], "1G"), ("c512-big.qcow2", ["-o", "cluster_size=512"], "10G"),
            ("c4k.qcow2", ["-o", "cluster_size=4k"], "3G"), ("c8k.qcow2", ["-o", "cluster_size=8k"], "3G"),
            ("c2m.qcow2", ["-o", "cluster_size=2M"], "1G"), ("zstd.qcow2", ["-o", "compression_type=zstd"], "1G"),
            ("extl2.qcow2", ["-o", "extended_l2=on"], "1G"),
            ("meta.qcow2", ["-o", "preallocation=metadata"], "3M"),
            ("meta4k.qcow2", ["-o", "preallocation=metadata,cluster_size=4k"], "50M"),
            ("meta-extl2.qcow2", ["-o", "extended_l2=on,preallocation=metadata"], "5M"),
            ("falloc.qcow2", ["-o", "preallocation=falloc"], "3M"),
            ("full.qcow2", ["-o", "preallocation=full"], "3M"),
            ("falloc4k.qcow2", ["-o", "preallocation=falloc,cluster_size=4k"], "20M"),
            ("falloc512.qcow2", ["-o", "preallocation=falloc,cluster_size=512"], "100M"),
            ("falloc2m.qcow2", ["-o", "preallocation=falloc,cluster_size=2M,extended_l2=on"], "256M"),
        ]
        for (name, options, size) in cases {
            try expectCreatesLikeQemu(name, ["-f", "qcow2"] + options, size: size, in: dir)
        }
        // qemu-img moves its refcount table when one cluster of it cannot name every block: same info and content.
        try expectCreatesLikeQemu("moved-table.qcow2", ["-f", "qcow2", "-o", "cluster_size=512,preallocation=metadata"],
                                  size: "20M", byteIdentical: false, in: dir)
    }

    @Test func overlaysRecordTheirBackingFileAsQemuImgDoes() throws {
        let dir = try TemporaryDirectory("kdct-create-backing")
        try qemuImg("create", "-q", "-f", "qcow2", dir.file("base.qcow2"), "100M")
        _ = try runProcess(["qemu-io", "-f", "qcow2", "-c", "write -P 3 1M 1M", dir.file("base.qcow2")])
        // Size from the backing file, or given; the backing format extension and the name after the extensions.
        try expectCreatesLikeQemu("overlay.qcow2", ["-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2"], size: nil, in: dir)
        try expectCreatesLikeQemu("larger.qcow2", ["-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2"], size: "1G", in: dir)
        try expectCreatesLikeQemu("small-cluster.qcow2", ["-f", "qcow2", "-o", "cluster_size=512", "-b", "base.qcow2",
                                                          "-F", "qcow2"], size: nil, in: dir)
        try TestPattern.writeRaw(to: dir.file("base.raw"), size: 8 << 20)
        try expectCreatesLikeQemu("over-raw.qcow2", ["-f", "qcow2", "-o", "backing_file=base.raw,backing_fmt=raw"],
                                  size: nil, in: dir)
        // The overlay reads its backing file through qemu: the same content.
        try expectQemuIdentical(dir.file("base.raw"), dir.file("ours-over-raw.qcow2"))

        // As qemu-img: no -F, no size and no backing, a backing file for raw, a -F the content contradicts.
        for arguments in [["-f", "qcow2", "-b", "base.qcow2", "x1.qcow2"], ["-f", "qcow2", "x2.qcow2"],
                          ["-f", "raw", "-b", "base.qcow2", "-F", "qcow2", "x3.raw", "1M"],
                          ["-f", "qcow2", "-b", "base.raw", "-F", "qcow2", "x4.qcow2"]] {
            let theirs = try Self.run(in: dir.path, ["qemu-img", "create", "-q"] + arguments)
            let ours = try Self.run(in: dir.path, [CLI.binary, "create", "-q"] + arguments)
            #expect(theirs.status == 1 && ours.status == 1, "\(arguments): \(ours.stderr)")
        }
        #expect(!FileManager.default.fileExists(atPath: dir.file("x1.qcow2")))
        // Backing names follow the reference policy: an absolute name needs --references any.
        let absolute = dir.file("base.qcow2")
        let refused = try Self.run(in: dir.path, [CLI.binary, "create", "-f", "qcow2", "-b", absolute, "-F", "qcow2", "abs.qcow2"])
        #expect(refused.status == 1 && refused.stderr.contains("--references"), "\(refused.stderr)")
        let allowed = try Self.run(in: dir.path, [CLI.binary, "create", "-q", "--references", "any", "-f", "qcow2", "-b", absolute,
                                                 "-F", "qcow2", "abs.qcow2"])
        #expect(allowed.status == 0, "\(allowed.stderr)")
        #expect(try qemuImg("info", "--output", "json", dir.file("abs.qcow2")).stdout.contains("\"backing-filename\": \"\(absolute)\""))
    }

    @Test func rawImagesAreQemuImgCreatesImages() throws {
        let dir = try TemporaryDirectory("kdct-create-raw")
        for (name, options, size) in [("plain.raw", [String](), "10M"), ("odd.raw", [], "1000"), ("falloc.raw", ["-o", "preallocation=falloc"], "3M"),
                                      ("full.raw", ["-o", "preallocation=full"], "3M")] {
            try expectCreatesLikeQemu(name, ["-f", "raw"] + options, size: size, in: dir)
            #expect(try CheckTests.allocatedBytes(dir.file("ours-" + name)) == CheckTests.allocatedBytes(dir.file("qemu-" + name)),
                    "\(name): allocation differs")
        }
        let refused = try Self.run(in: dir.path, [CLI.binary, "create", "-f", "raw", "-o", "preallocation=metadata", "m.raw", "1M"])
        #expect(refused.status == 1 && !FileManager.default.fileExists(atPath: dir.file("m.raw")))
    }

    @Test func newImagesAppearWholeAndNeverReplaceWithoutForce() throws {
        let dir = try TemporaryDirectory("kdct-create-dest")
        let path = dir.file("disk.qcow2")
        try Data("keep".utf8).write(to: URL(fileURLWithPath: path))
        let before = try FileFingerprint(path)
        let refused = try CLI.run(["create", "-f", "qcow2", path, "1G"])
        #expect(refused.status == 1 && refused.stderr.contains("--force"), "\(refused.stderr)")
        #expect(try FileFingerprint(path) == before)
        let replaced = try CLI.run(["create", "-f", "qcow2", "--force", path, "1G"])
        #expect(replaced.status == 0 && replaced.stdout.hasPrefix("Formatting '\(path)', fmt=qcow2 cluster_size=65536"))
        try expectQemuCheckClean(path)
        #expect(directoryListing(dir.path) == ["disk.qcow2"])
        // A symlink: its target is replaced, the link stays.
        try FileManager.default.createSymbolicLink(atPath: dir.file("link.qcow2"), withDestinationPath: "disk.qcow2")
        #expect(try CLI.run(["create", "-q", "-f", "raw", "--force", dir.file("link.qcow2"), "2M"]).status == 0)
        #expect(FilePaths.status(dir.file("link.qcow2"))?.kind == .symbolicLink)
        #expect(try FileFingerprint(path).size == 2 << 20)
    }

    @Test func qcow2OnABlockDeviceIsWrittenInPlace() throws {
        let dir = try TemporaryDirectory("kdct-create-device")
        let device = try LoopDevice(size: 64 << 20, in: dir, fill: 0xAB)
        let result = try CLI.run(["create", "-q", "-f", "qcow2", device.path, "1G"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(device.isBlockDevice)
        try expectQemuCheckClean(device.path)
        let theirs = dir.file("reference.qcow2")
        try qemuImg("create", "-q", "-f", "qcow2", theirs, "1G")
        try expectQemuIdentical(theirs, device.path, formatA: "qcow2", formatB: "qcow2")
        // Too small for the request, preallocation on a device: refused before any write.
        let small = try LoopDevice(size: 1 << 20, in: dir, name: "small.img")
        #expect(try CLI.run(["create", "-f", "raw", small.path, "2M"]).status == 1)
        #expect(try CLI.run(["create", "-f", "qcow2", "-o", "preallocation=metadata", small.path, "100k"]).status == 1)
    }
}
