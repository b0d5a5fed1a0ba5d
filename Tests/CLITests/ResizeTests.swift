import Foundation
import KDCTFormats
import KDCTTestSupport
import Testing

/// `resize` against `qemu-img resize` on copies of the same images: the results compared byte for byte where the
/// layout is qemu's (growing and shrinking without preallocation, metadata preallocation without new refcount
/// blocks), and always with `qemu-img check`, `qemu-img compare` and the `qemu-img info` JSON; qemu's refusals and
/// exit statuses; and crash safety: every write of a resize failed in turn (strace fault injection), each time the
/// image must check without corruption and read as before.
@Suite struct ResizeTests {
    /// A qcow2 image of `size` with data at three places, made by qemu-img with `options`.
    static func makeImage(_ path: String, size: String, options: [String] = []) throws {
        try qemuImg(["create", "-q", "-f", "qcow2"] + options + [path, size])
        _ = try runProcess(["qemu-io", "-f", "qcow2", "-c", "write -P 7 0 64k", "-c", "write -P 9 1M 64k",
                            "-c", "write -P 3 2M 4k", path])
    }

    /// Resizes copies of one image with both tools and compares the results.
    func expectResizesLikeQemu(_ label: String, create: [String] = [], size: String, arguments: [String],
                               byteIdentical: Bool = true, status: Int32 = 0, in dir: TemporaryDirectory,
                               sourceLocation: SourceLocation = #_sourceLocation) throws {
        let theirs = dir.file("qemu-\(label).qcow2")
        let ours = dir.file("ours-\(label).qcow2")
        try Self.makeImage(theirs, size: size, options: create)
        try FileManager.default.copyItem(atPath: theirs, toPath: ours)
        let before = try FileFingerprint(ours)
        let qemu = try runProcess(["qemu-img", "resize", "-q"] + arguments.dropLast() + [theirs, arguments[arguments.count - 1]])
        let kdct = try CLI.run(["resize", "-q"] + arguments.dropLast() + [ours, arguments[arguments.count - 1]])
        #expect(qemu.status == status && kdct.status == status, "\(label): qemu \(qemu.status) \(qemu.stderr) / ours \(kdct.status) \(kdct.stderr)",
                sourceLocation: sourceLocation)
        if status != 0 {
            #expect(try FileFingerprint(ours) == before, "\(label): a refused resize changed the image", sourceLocation: sourceLocation)
            return
        }
        if byteIdentical {
            #expect(try FileFingerprint(ours).sha256 == FileFingerprint(theirs).sha256, "\(label): not qemu-img's bytes",
                    sourceLocation: sourceLocation)
        }
        try expectQemuCheckClean(ours, sourceLocation: sourceLocation)
        try expectQemuIdentical(theirs, ours, sourceLocation: sourceLocation)
        #expect(try CreateTests.info(theirs) == CreateTests.info(ours), "\(label): info differs", sourceLocation: sourceLocation)
    }

    @Test func qcow2ResizesAsQemuImgResizes() throws {
        let dir = try TemporaryDirectory("kdct-resize")
        try expectResizesLikeQemu("grow", size: "1G", arguments: ["2G"], in: dir)
        try expectResizesLikeQemu("grow-l1", size: "1G", arguments: ["600G"], in: dir)
        try expectResizesLikeQemu("grow-relative", size: "1G", arguments: ["+10T"], in: dir)
        try expectResizesLikeQemu("grow-small-clusters", create: ["-o", "cluster_size=512"], size: "3M", arguments: ["1G"], in: dir)
        try expectResizesLikeQemu("grow-extl2", create: ["-o", "extended_l2=on"], size: "3M", arguments: ["2G"], in: dir)
        try expectResizesLikeQemu("same", size: "3M", arguments: ["3M"], in: dir)
        try expectResizesLikeQemu("metadata", size: "3M", arguments: ["--preallocation=metadata", "10M"], in: dir)
        try expectResizesLikeQemu("shrink", size: "2G", arguments: ["--shrink", "1M"], in: dir)
        try expectResizesLikeQemu("shrink-partial", size: "3G", arguments: ["--shrink", "1536k"], in: dir)
        try expectResizesLikeQemu("shrink-relative", size: "3G", arguments: ["--shrink", "-1G"], in: dir)
        // Where qemu-img places new refcount blocks or a new refcount table differently: same content and info.
        try expectResizesLikeQemu("moved-table", create: ["-o", "cluster_size=512"], size: "3M", arguments: ["100G"],
                                  byteIdentical: false, in: dir)
        try expectResizesLikeQemu("falloc", size: "3M", arguments: ["--preallocation=falloc", "100M"], byteIdentical: false, in: dir)
        try expectResizesLikeQemu("full", create: ["-o", "cluster_size=4k"], size: "3M", arguments: ["--preallocation=full", "50M"],
                                  byteIdentical: false, in: dir)
        try expectResizesLikeQemu("metadata-blocks", create: ["-o", "cluster_size=4k"], size: "3M",
                                  arguments: ["--preallocation=metadata", "50M"], byteIdentical: false, in: dir)
        // qemu-img's refusals: a smaller size without --shrink, a size not positive, not a multiple of 512.
        try expectResizesLikeQemu("no-shrink", size: "2G", arguments: ["1M"], status: 1, in: dir)
        try expectResizesLikeQemu("no-shrink-relative", size: "2G", arguments: ["-1G"], status: 1, in: dir)
        try expectResizesLikeQemu("not-positive", size: "2G", arguments: ["--shrink", "-3G"], status: 1, in: dir)
        try expectResizesLikeQemu("odd", size: "2G", arguments: ["2147484000"], status: 1, in: dir)
        let message = try CLI.run(["resize", dir.file("ours-no-shrink.qcow2"), "1M"]).stderr
        #expect(message.contains("use the --shrink option"), "\(message)")
    }

    @Test func rawResizesAsQemuImgResizes() throws {
        let dir = try TemporaryDirectory("kdct-resize-raw")
        for (label, arguments) in [("grow", ["+3M"]), ("shrink", ["--shrink", "1M"]), ("falloc", ["--preallocation=falloc", "8M"]),
                                   ("full", ["--preallocation=full", "8M"]), ("odd", ["5000001"])] {
            let (theirs, ours) = (dir.file("qemu-\(label).raw"), dir.file("ours-\(label).raw"))
            try TestPattern.writeRaw(to: theirs, size: 4 << 20)
            try TestPattern.writeRaw(to: ours, size: 4 << 20)
            let qemu = try runProcess(["qemu-img", "resize", "-q", "-f", "raw"] + arguments.dropLast() + [theirs, arguments[arguments.count - 1]])
            let kdct = try CLI.run(["resize", "-q", "-f", "raw"] + arguments.dropLast() + [ours, arguments[arguments.count - 1]])
            #expect(qemu.status == 0 && kdct.status == 0, "\(label): \(qemu.stderr) / \(kdct.stderr)")
            #expect(try FileFingerprint(ours).sha256 == FileFingerprint(theirs).sha256, "\(label)")
            #expect(try CheckTests.allocatedBytes(ours) >= CheckTests.allocatedBytes(theirs) - 4096, "\(label): allocation")
        }
        // Formats resize does not change: refused, unchanged.
        let vdi = dir.file("disk.vdi")
        try qemuImg("create", "-q", "-f", "vdi", vdi, "10M")
        let before = try FileFingerprint(vdi)
        let refused = try CLI.run(["resize", vdi, "20M"])
        #expect(refused.status == 1 && refused.stderr.contains("raw and qcow2"), "\(refused.stderr)")
        #expect(try FileFingerprint(vdi) == before)
        // A device cannot grow.
        let device = try LoopDevice(size: 4 << 20, in: dir)
        #expect(try CLI.run(["resize", "-f", "raw", device.path, "8M"]).status == 1)
        #expect(device.isBlockDevice)
    }

    @Test func resizeRefusesWhatItCannotDoSafely() throws {
        let dir = try TemporaryDirectory("kdct-resize-refuse")
        // Shrinking an image with internal snapshots; growing keeps the snapshots readable.
        let snapshots = dir.file("snapshots.qcow2")
        try Self.makeImage(snapshots, size: "8M")
        try qemuImg("snapshot", "-c", "first", snapshots)
        let before = try FileFingerprint(snapshots)
        #expect(try CLI.run(["resize", "--shrink", snapshots, "4M"]).status == 1)
        #expect(try FileFingerprint(snapshots) == before)
        #expect(try CLI.run(["resize", snapshots, "1G"]).status == 0)
        try expectQemuCheckClean(snapshots)
        try qemuImg("convert", "-O", "raw", "-l", "first", snapshots, dir.file("first.raw"))
        try qemuImg("convert", "-O", "raw", "-f", "qcow2", snapshots, dir.file("active.raw"))
        try expectQemuIdentical(dir.file("first.raw"), dir.file("active.raw"))
        // An overlay whose backing file is larger than it (the backing file's data would show in the new range).
        try qemuImg("create", "-q", "-f", "qcow2", dir.file("base.qcow2"), "16M")
        try qemuImg("create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", dir.file("overlay.qcow2"), "8M")
        #expect(try CLI.run(["resize", dir.file("overlay.qcow2"), "16M"]).status == 1)
        // An image a process holds (as a running VM's disk).
        let held = dir.file("held.qcow2")
        try Self.makeImage(held, size: "8M")
        let heldBefore = try FileFingerprint(held)
        try HeldImage.while(held) {
            let result = try CLI.run(["resize", held, "16M"])
            #expect(result.status == 1 && result.stderr.contains("in use"), "\(result.stderr)")
        }
        #expect(try FileFingerprint(held) == heldBefore)
    }

    /// Each write of a resize fails in turn (`strace -e inject=pwrite64:error=EIO:when=N`), as if the machine had
    /// stopped there: the image must never be corrupt (qemu-img check 0, or 3 for leaked clusters only) and must read
    /// as before wherever the old guest reached.
    @Test func anInterruptedResizeLeavesAConsistentImage() throws {
        let dir = try TemporaryDirectory("kdct-resize-crash")
        let cases: [(label: String, create: [String], size: String, arguments: [String])] = [
            ("grow", [], "8M", ["600G"]), ("grow-blocks", ["-o", "cluster_size=512"], "3M", ["20G"]),
            ("metadata", ["-o", "cluster_size=4k"], "3M", ["--preallocation=metadata", "50M"]),
            ("shrink", [], "3G", ["--shrink", "1536k"]),
        ]
        for item in cases {
            let original = dir.file("\(item.label)-original.qcow2")
            try Self.makeImage(original, size: item.size, options: item.create)
            let command = { (image: String) in
                [CLI.binary, "resize", "-q"] + item.arguments.dropLast() + [image, item.arguments[item.arguments.count - 1]]
            }
            // How many writes the whole resize makes, then each of the first 40 failed, and 20 spread over the rest.
            let counted = dir.file("\(item.label)-count.qcow2")
            try FileManager.default.copyItem(atPath: original, toPath: counted)
            let trace = dir.file("\(item.label).trace")
            #expect(try runProcess(["strace", "-f", "-qq", "-o", trace, "-e", "trace=pwrite64"] + command(counted)).status == 0)
            let writes = try String(contentsOfFile: trace, encoding: .utf8).split(separator: "\n").filter { $0.contains("pwrite64(") }.count
            #expect(writes >= 3, "\(item.label): \(writes) writes")
            var failures = Set(1...min(writes, 40))
            for step in 0..<20 { failures.insert(40 + (writes - 40) * step / 20) }
            for failure in failures.sorted() where failure >= 1 && failure <= writes {
                let image = dir.file("\(item.label)-\(failure).qcow2")
                try FileManager.default.copyItem(atPath: original, toPath: image)
                let result = try runProcess(["strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=pwrite64",
                                             "-e", "inject=pwrite64:error=EIO:when=\(failure)"] + command(image))
                #expect(result.status == 1 && result.stderr.contains("I/O error"), "\(item.label), write \(failure): \(result.stderr)")
                let check = try runProcess(["qemu-img", "check", image])
                #expect(check.status == 0 || check.status == 3,
                        "\(item.label), write \(failure) failed: qemu-img check \(check.status)\n\(check.stdout)\(check.stderr)")
                // The old guest content is intact (compared up to the smaller size, the rest reading as zeros).
                let compare = try runProcess(["qemu-img", "compare", original, image])
                #expect(compare.status == 0 || item.label == "shrink",
                        "\(item.label), write \(failure) failed: \(compare.stdout)")
                FilePaths.remove(image)
            }
        }
    }
}
