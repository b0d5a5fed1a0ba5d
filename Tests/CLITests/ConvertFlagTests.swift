import Foundation
import KDCTFormats
import KDCTTestSupport
import Testing

/// The qemu-img convert and compare flags migration scripts pass (`-S`, `-C`, `-U`, `-q`, `-W`, `-t`, `-T`,
/// `compare -s`/`-q`), `--version` and the command list of `--help`; every output checked with qemu-img.
@Suite struct ConvertFlagTests {
    /// Bytes a file occupies on disk.
    func allocated(_ path: String) -> UInt64 {
        var st = stat()
        return stat(path, &st) == 0 ? UInt64(st.st_blocks) * 512 : 0
    }

    /// Guest bytes qemu-img map reports as data.
    func mappedData(_ path: String, format: String) throws -> Int {
        let map = try qemuImg("map", "--output", "json", "-f", format, path)
        let extents = try JSONSerialization.jsonObject(with: Data(map.stdout.utf8)) as? [[String: Any]] ?? []
        return extents.filter { $0["data"] as? Bool == true }.reduce(0) { $0 + ($1["length"] as? Int ?? 0) }
    }

    @Test func sparseSizeZeroWritesEveryByte() throws {
        let directory = try TemporaryDirectory("kdct-flags")
        let source = try TestPattern.writeRaw(to: directory.file("src.raw"), size: 8 << 20)
        let raw = directory.file("full.raw")
        let result = try CLI.run(["convert", "-S", "0", "-O", "raw", source, raw])
        #expect(result.status == 0, "\(result.stderr)")
        try expectQemuIdentical(source, raw, formatA: "raw", formatB: "raw")
        #expect(allocated(raw) >= 8 << 20, "-S 0 left holes: \(allocated(raw)) bytes allocated")

        let qcow2 = directory.file("full.qcow2")
        let q = try CLI.run(["convert", "-S", "0", "-O", "qcow2", source, qcow2])
        #expect(q.status == 0, "\(q.stderr)")
        try expectQemuIdentical(source, qcow2, formatA: "raw", formatB: "qcow2")
        try expectQemuCheckClean(qcow2)
        #expect(try mappedData(qcow2, format: "qcow2") == 8 << 20, "-S 0 left clusters unallocated")

        // The default leaves them out.
        let sparse = directory.file("sparse.qcow2")
        #expect(try CLI.run(["convert", "-O", "qcow2", source, sparse]).status == 0)
        #expect(try mappedData(sparse, format: "qcow2") < 2 << 20)
    }

    @Test func sparseSizeKeepsShortZeroRunsAllocated() throws {
        let directory = try TemporaryDirectory("kdct-flags")
        let source = try TestPattern.writeRaw(to: directory.file("src.raw"), size: 8 << 20)
        // Data, a 64 KiB zero run, data; a 1 MiB hole, data.
        _ = try runProcess(["qemu-io", "-f", "raw", "-c", "write -P 1 0 64k", "-c", "write -P 2 128k 64k",
                            "-c", "write -P 3 1216k 64k", source])
        for (format, short, long) in [("raw", "128k", "4k"), ("qcow2", "2M", "64k")] {
            let kept = directory.file("kept.\(format)")
            let holes = directory.file("holes.\(format)")
            let a = try CLI.run(["convert", "-S", short, "-O", format, source, kept])
            let b = try CLI.run(["convert", "-S", long, "-O", format, source, holes])
            #expect(a.status == 0 && b.status == 0, "\(a.stderr) \(b.stderr)")
            try expectQemuIdentical(source, kept, formatA: "raw", formatB: format)
            try expectQemuIdentical(source, holes, formatA: "raw", formatB: format)
            #expect(try mappedData(kept, format: format) > mappedData(holes, format: format),
                    "\(format): -S \(short) did not store the short zero run")
            if format == "qcow2" { try expectQemuCheckClean(kept) }
        }
        for bad in ["1000", "32M", "x"] {
            #expect(try CLI.run(["convert", "-S", bad, source, directory.file("bad.raw")]).status == 1, "-S \(bad)")
        }
    }

    /// `-C` on every single-file format, a chain and a VMDK (read normally): identical outputs.
    @Test func copyOffloadingConvertsIdentically() throws {
        let directory = try TemporaryDirectory("kdct-flags")
        let raw = try TestPattern.writeRaw(to: directory.file("src.raw"), size: (12 << 20) + 512)
        _ = try runProcess(["qemu-io", "-f", "raw", "-c", "write -P 9 5M 3M", raw])
        var inputs: [(String, String)] = [(raw, "raw")]
        for (name, format, options) in [("a.qcow2", "qcow2", [String]()), ("b.qcow2", "qcow2", ["-o", "cluster_size=4k"]),
                                        ("c.vdi", "vdi", []), ("d.vhd", "vpc", []), ("e.vhdx", "vhdx", []),
                                        ("f.qed", "qed", []), ("g.vmdk", "vmdk", []), ("h.qcow2", "qcow2", ["-c"])] {
            try qemuImg(["convert", "-f", "raw", "-O", format] + options + [raw, directory.file(name)])
            inputs.append((directory.file(name), format))
        }
        let overlay = directory.file("overlay.qcow2")
        try qemuImg("create", "-q", "-f", "qcow2", "-b", "a.qcow2", "-F", "qcow2", overlay)
        _ = try runProcess(["qemu-io", "-f", "qcow2", "-c", "write -P 4 6M 100k", overlay])
        inputs.append((overlay, "qcow2"))
        for (input, format) in inputs {
            for output in ["raw", "qcow2"] {
                let out = directory.file("out-\(FilePaths.lastComponent(of: input)).\(output)")
                let result = try CLI.run(["convert", "-C", "-O", output, input, out])
                #expect(result.status == 0, "\(input): \(result.stderr)")
                try expectQemuIdentical(input, out, formatA: format, formatB: output)
                if output == "qcow2" { try expectQemuCheckClean(out) }
                FilePaths.remove(out)
            }
        }
        // The 3 MiB run is copied by the kernel, not read: the bytes read are the pattern's unaligned edges only.
        let offloaded = try CLI.run(["convert", "-C", "--progress", "json", "-O", "raw", raw, directory.file("json.raw")])
        let done = try JSONSerialization.jsonObject(with: Data((offloaded.stdout.split(separator: "\n").last ?? "").utf8)) as? [String: Any]
        let dataRead = try #require(done?["data-read"] as? Int)
        #expect(dataRead < 1 << 20, "-C read \(dataRead) bytes instead of copying them")
        let plain = try CLI.run(["convert", "--progress", "json", "-O", "raw", raw, directory.file("plain.raw")])
        let plainDone = try JSONSerialization.jsonObject(with: Data((plain.stdout.split(separator: "\n").last ?? "").utf8)) as? [String: Any]
        #expect((plainDone?["data-read"] as? Int ?? 0) >= 3 << 20)

        #expect(try CLI.run(["convert", "-C", "-c", "-O", "qcow2", raw, directory.file("x.qcow2")]).status == 1)
        #expect(try CLI.run(["convert", "-C", "-S", "4k", raw, directory.file("x.raw")]).status == 1)
    }

    @Test func compatibilityFlagsAreAccepted() throws {
        let directory = try TemporaryDirectory("kdct-flags")
        let source = try TestPattern.writeRaw(to: directory.file("src.raw"), size: 4 << 20)
        for (index, flags) in [["-U"], ["--force-share"], ["-W"], ["-t", "unsafe"], ["-t", "none"], ["-t", "writeback"],
                               ["-T", "none"], ["-T", "directsync", "-t", "writethrough"], ["-U", "-W", "-q", "-p"]].enumerated() {
            let out = directory.file("out-\(index).qcow2")
            let result = try CLI.run(["convert"] + flags + ["-O", "qcow2", source, out])
            #expect(result.status == 0, "\(flags): \(result.stderr)")
            try expectQemuIdentical(source, out, formatA: "raw", formatB: "qcow2")
            try expectQemuCheckClean(out)
        }
        // -q: nothing at all on stdout or stderr, even for the note about the name choosing qcow2.
        let quiet = try CLI.run(["convert", "-q", source, directory.file("quiet.qcow2")])
        #expect(quiet.status == 0 && quiet.stdout.isEmpty && quiet.stderr.isEmpty, "\(quiet.stdout)\(quiet.stderr)")
        #expect(try CLI.run(["convert", "-t", "bogus", source, directory.file("bogus.raw")]).status == 1)
    }

    @Test func strictAndQuietCompare() throws {
        let directory = try TemporaryDirectory("kdct-flags")
        let source = try TestPattern.writeRaw(to: directory.file("src.raw"), size: 4 << 20)
        // A copy with the same holes maps the same; a dense one (every hole written) does not.
        let copy = try TestPattern.writeRaw(to: directory.file("copy.raw"), size: 4 << 20)
        let dense = directory.file("dense.raw")
        #expect(try runProcess(["cp", "--sparse=never", source, dense]).status == 0)
        let qcow2 = directory.file("conv.qcow2")
        try qemuImg("convert", "-f", "raw", "-O", "qcow2", source, qcow2)
        let qcow2Again = directory.file("again.qcow2")
        try qemuImg("convert", "-f", "raw", "-O", "qcow2", source, qcow2Again)

        for (a, b, status) in [(source, copy, 0), (qcow2, qcow2Again, 0), (source, dense, 1)] {
            let ours = try CLI.run(["compare", "-s", a, b])
            #expect(ours.status == Int32(status), "compare -s \(a) \(b): \(ours.stdout)\(ours.stderr)")
            #expect(try runProcess(["qemu-img", "compare", "-s", a, b]).status == Int32(status), "qemu-img disagrees")
        }
        let same = try CLI.run(["compare", "-s", source, copy])
        #expect(same.stdout.contains("Images are identical."))
        // Same content, different allocation: plain compare says identical, strict compare differs, as qemu-img.
        #expect(try CLI.run(["compare", source, qcow2]).status == 0)
        let strict = try CLI.run(["compare", "-s", source, qcow2])
        #expect(strict.status == 1)
        #expect(strict.stdout.contains("block status mismatch"), "\(strict.stdout)")
        #expect(try runProcess(["qemu-img", "compare", "-s", source, qcow2]).status == 1)
        // Sizes.
        let longer = directory.file("longer.raw")
        try FileManager.default.copyItem(atPath: source, toPath: longer)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: longer))
        try handle.truncate(atOffset: 5 << 20)
        try handle.close()
        #expect(try CLI.run(["compare", source, longer]).status == 0)
        let sizes = try CLI.run(["compare", "-s", source, longer])
        #expect(sizes.status == 1)
        #expect(sizes.stdout.contains("Strict mode: Image size mismatch!"))
        // -q: only the exit status.
        for (arguments, status) in [(["compare", "-q", source, copy], 0), (["compare", "-q", "-s", source, qcow2], 1)] {
            let quiet = try CLI.run(arguments)
            #expect(quiet.status == Int32(status))
            #expect(quiet.stdout.isEmpty, "\(quiet.stdout)")
        }
    }

    @Test func versionAndHelpListEveryCommand() throws {
        let version = try CLI.run(["--version"])
        #expect(version.status == 0)
        #expect(version.stdout.hasPrefix("kdct-native version "))
        let help = try CLI.run(["--help"])
        #expect(help.status == 0)
        for command in ["info", "convert", "measure", "map", "compare", "check", "checksum", "formats", "export"] {
            #expect(help.stdout.contains("\n  \(command) "), "--help does not list \(command)")
        }
    }
}
