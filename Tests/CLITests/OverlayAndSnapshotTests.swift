import Foundation
import KDCTFormats
import KDCTTestSupport
import Testing

/// `convert -B BACKING -F FMT` against `qemu-img convert -B` on the same chains (the overlay, read with its backing
/// file, compared with the source by `qemu-img compare`; its own allocation compared with qemu's overlay), and
/// `convert -l` against `qemu-img convert -l` on images with internal snapshots made by `qemu-img snapshot -c`.
@Suite struct OverlayAndSnapshotTests {
    static func run(in directory: String, _ command: [String]) throws -> ProcessResult {
        try runProcess(["sh", "-c", "cd \"$0\" && exec \"$@\"", directory] + command)
    }

    /// The runs the overlay itself holds (depth 0 of `qemu-img map`): start, length, zero, data.
    static func topLayer(_ path: String) throws -> [String] {
        let text = try qemuImg("map", "--output", "json", path).stdout
        let entries = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [[String: Any]] ?? []
        return entries.filter { ($0["depth"] as? Int) == 0 && ($0["present"] as? Bool) == true }.map {
            "\($0["start"] ?? "") +\($0["length"] ?? "") zero=\($0["zero"] ?? "") data=\($0["data"] ?? "")"
        }
    }

    /// A base with data in three places and a top overlay that rewrites some, zeroes some (explicit zeros over base
    /// data, and zeros written as data) and adds some.
    static func makeChain(in dir: TemporaryDirectory, baseFormat: String = "qcow2") throws {
        let steps: [[String]] = [
            ["qemu-img", "create", "-q", "-f", baseFormat, "base.\(baseFormat)", "64M"],
            ["qemu-io", "-f", baseFormat, "-c", "write -P 1 0 8M", "-c", "write -P 2 16M 8M", "-c", "write -P 3 40M 4M", "base.\(baseFormat)"],
            ["qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.\(baseFormat)", "-F", baseFormat, "top.qcow2"],
            ["qemu-io", "-f", "qcow2", "-c", "write -P 9 4M 2M", "-c", "write -z 17M 2M", "-c", "write -P 0 41M 1M",
             "-c", "write -P 7 60M 1M", "-c", "write -P 5 31M 64k", "top.qcow2"],
        ]
        for step in steps {
            let result = try run(in: dir.path, step)
            #expect(result.status == 0, "\(step): \(result.stderr)")
        }
    }

    @Test func anOverlayOfALayerOfTheChainHoldsWhatQemuImgsHolds() throws {
        let dir = try TemporaryDirectory("kdct-overlay")
        try Self.makeChain(in: dir)
        for extra in [[String](), ["-c"], ["-o", "cluster_size=4k"]] {
            let theirs = "qemu-\(extra.count).qcow2", ours = "ours-\(extra.count).qcow2"
            try #require(try Self.run(in: dir.path, ["qemu-img", "convert", "-O", "qcow2"] + extra
                                      + ["-B", "base.qcow2", "-F", "qcow2", "top.qcow2", theirs]).status == 0)
            let result = try Self.run(in: dir.path, [CLI.binary, "convert", "-q", "-O", "qcow2"] + extra
                                      + ["-B", "base.qcow2", "-F", "qcow2", "top.qcow2", ours])
            #expect(result.status == 0, "\(extra): \(result.stderr)")
            try expectQemuCheckClean(dir.file(ours))
            try expectQemuIdentical(dir.file("top.qcow2"), dir.file(ours))
            try expectQemuIdentical(dir.file(theirs), dir.file(ours))
            #expect(try Self.topLayer(dir.file(ours)) == Self.topLayer(dir.file(theirs)), "\(extra): allocation differs from qemu-img's")
            let info = try qemuImg("info", "--output", "json", dir.file(ours)).stdout
            #expect(info.contains("\"backing-filename\": \"base.qcow2\"") && info.contains("\"backing-filename-format\": \"qcow2\""))
        }
        // A raw base: the same, and a chain of other formats (a VMDK delta over its VMDK base).
        let rawDir = try TemporaryDirectory("kdct-overlay-raw")
        try Self.makeChain(in: rawDir, baseFormat: "raw")
        let result = try Self.run(in: rawDir.path, [CLI.binary, "convert", "-q", "-O", "qcow2", "-B", "base.raw", "-F", "raw",
                                                    "top.qcow2", "ours.qcow2"])
        #expect(result.status == 0, "\(result.stderr)")
        try expectQemuIdentical(rawDir.file("top.qcow2"), rawDir.file("ours.qcow2"))
        try #require(try Self.run(in: rawDir.path, ["qemu-img", "convert", "-O", "qcow2", "-B", "base.raw", "-F", "raw",
                                                    "top.qcow2", "qemu.qcow2"]).status == 0)
        #expect(try Self.topLayer(rawDir.file("ours.qcow2")) == Self.topLayer(rawDir.file("qemu.qcow2")))

        let vmdkDir = try TemporaryDirectory("kdct-overlay-vmdk")
        for step in [["qemu-img", "create", "-q", "-f", "vmdk", "base.vmdk", "64M"],
                     ["qemu-io", "-f", "vmdk", "-c", "write -P 1 0 8M", "-c", "write -P 2 16M 8M", "base.vmdk"],
                     ["qemu-img", "create", "-q", "-f", "vmdk", "-b", "base.vmdk", "-F", "vmdk", "top.vmdk"],
                     ["qemu-io", "-f", "vmdk", "-c", "write -P 9 4M 2M", "-c", "write -P 7 60M 1M", "top.vmdk"],
                     ["qemu-img", "convert", "-O", "qcow2", "-B", "base.vmdk", "-F", "vmdk", "top.vmdk", "qemu.qcow2"],
                     [CLI.binary, "convert", "-q", "-O", "qcow2", "-B", "base.vmdk", "-F", "vmdk", "top.vmdk", "ours.qcow2"]] {
            let result = try Self.run(in: vmdkDir.path, step)
            #expect(result.status == 0, "\(step): \(result.stderr)")
        }
        try expectQemuIdentical(vmdkDir.file("top.vmdk"), vmdkDir.file("ours.qcow2"))
        #expect(try Self.topLayer(vmdkDir.file("ours.qcow2")) == Self.topLayer(vmdkDir.file("qemu.qcow2")))
    }

    @Test func anOverlayOfABaseConvertedBeforeHoldsWhatDiffers() throws {
        let dir = try TemporaryDirectory("kdct-overlay-compare")
        try Self.makeChain(in: dir)
        // The base shipped earlier, converted on its own: not a layer of the source chain.
        try qemuImg("convert", "-O", "qcow2", dir.file("base.qcow2"), dir.file("shipped.qcow2"))
        let result = try Self.run(in: dir.path, [CLI.binary, "convert", "-q", "-O", "qcow2", "-B", "shipped.qcow2", "-F", "qcow2",
                                                 "top.qcow2", "ours.qcow2"])
        #expect(result.status == 0, "\(result.stderr)")
        try expectQemuCheckClean(dir.file("ours.qcow2"))
        try expectQemuIdentical(dir.file("top.qcow2"), dir.file("ours.qcow2"))
        // It holds only the differences: what qemu-img's overlay of the real layer holds, less the cluster the top
        // rewrote with the base's own bytes.
        try #require(try Self.run(in: dir.path, ["qemu-img", "convert", "-O", "qcow2", "-B", "base.qcow2", "-F", "qcow2",
                                                 "top.qcow2", "qemu.qcow2"]).status == 0)
        let ours = try Self.topLayer(dir.file("ours.qcow2"))
        let qemus = try Self.topLayer(dir.file("qemu.qcow2"))
        #expect(!ours.isEmpty && ours.count <= qemus.count, "\(ours)")
        // Flattened source over a base shipped earlier: still only the differences.
        try qemuImg("convert", "-O", "raw", dir.file("top.qcow2"), dir.file("flat.raw"))
        let flat = try Self.run(in: dir.path, [CLI.binary, "convert", "-q", "-f", "raw", "-O", "qcow2", "-B", "shipped.qcow2",
                                               "-F", "qcow2", "flat.raw", "flat-overlay.qcow2"])
        #expect(flat.status == 0, "\(flat.stderr)")
        try expectQemuIdentical(dir.file("flat.raw"), dir.file("flat-overlay.qcow2"), formatA: "raw", formatB: "qcow2")
        let flatMap = try Self.topLayer(dir.file("flat-overlay.qcow2"))
        let allocated = flatMap.filter { $0.hasSuffix("data=true") }
        #expect(allocated.count <= 4, "a flattened source over its own base should hold only the changed ranges: \(flatMap)")
    }

    @Test func overlaysNeedQcow2AndAFormatAndFollowThePolicy() throws {
        let dir = try TemporaryDirectory("kdct-overlay-refuse")
        try Self.makeChain(in: dir)
        for arguments in [["-O", "qcow2", "-B", "base.qcow2", "top.qcow2", "a.qcow2"],
                          ["-O", "raw", "-B", "base.qcow2", "-F", "qcow2", "top.qcow2", "b.raw"],
                          ["-O", "qcow2", "-B", "base.qcow2", "-F", "raw", "top.qcow2", "c.qcow2"],
                          ["-O", "qcow2", "-B", dir.file("base.qcow2"), "-F", "qcow2", "top.qcow2", "d.qcow2"]] {
            let result = try Self.run(in: dir.path, [CLI.binary, "convert"] + arguments)
            #expect(result.status == 1, "\(arguments): \(result.stdout)")
        }
        #expect(directoryListing(dir.path) == ["base.qcow2", "top.qcow2"])
    }

    @Test func internalSnapshotsConvertAsQemuImgConvertsThem() throws {
        let dir = try TemporaryDirectory("kdct-snapshot")
        let image = dir.file("snapshots.qcow2")
        try qemuImg("create", "-q", "-f", "qcow2", image, "32M")
        _ = try runProcess(["qemu-io", "-f", "qcow2", "-c", "write -P 1 0 4M", image])
        try qemuImg("snapshot", "-c", "first", image)
        _ = try runProcess(["qemu-io", "-f", "qcow2", "-c", "write -P 2 1M 4M", "-c", "write -z 20M 1M", image])
        try qemuImg("snapshot", "-c", "second", image)
        _ = try runProcess(["qemu-io", "-f", "qcow2", "-c", "write -P 3 0 1M", "-c", "write -z 2M 1M", image])
        // A third snapshot after a resize: its own virtual size.
        try qemuImg("resize", "-q", image, "48M")
        _ = try runProcess(["qemu-io", "-f", "qcow2", "-c", "write -P 4 40M 1M", image])
        try qemuImg("snapshot", "-c", "grown", image)
        for selector in ["first", "1", "second", "snapshot.name=second", "snapshot.id=2", "snapshot.id=1,snapshot.name=first",
                         "grown"] {
            for format in ["qcow2", "raw"] {
                let (theirs, ours) = (dir.file("qemu.\(format)"), dir.file("ours.\(format)"))
                try qemuImg("convert", "-O", format, "-l", selector, image, theirs)
                let result = try CLI.run(["convert", "-q", "-O", format, "-l", selector, image, ours])
                #expect(result.status == 0, "\(selector): \(result.stderr)")
                try expectQemuIdentical(theirs, ours, formatA: format, formatB: format)
                #expect(try FileFingerprint(ours).size > 0)
                if format == "qcow2" { try expectQemuCheckClean(ours) }
                FilePaths.remove(theirs)
                FilePaths.remove(ours)
            }
        }
        // Not there, or not a qcow2: refused, nothing written.
        let missing = try CLI.run(["convert", "-O", "raw", "-l", "third", image, dir.file("x.raw")])
        #expect(missing.status == 1 && missing.stderr.contains("no internal snapshot"), "\(missing.stderr)")
        try TestPattern.writeRaw(to: dir.file("plain.raw"), size: 1 << 20)
        #expect(try CLI.run(["convert", "-f", "raw", "-O", "raw", "-l", "first", dir.file("plain.raw"), dir.file("y.raw")]).status == 1)
        #expect(!FileManager.default.fileExists(atPath: dir.file("x.raw")) && !FileManager.default.fileExists(atPath: dir.file("y.raw")))
    }
}
