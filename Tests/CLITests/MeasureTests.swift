import Foundation
import KDCTFormats
import KDCTTestSupport
import Testing

/// `measure` against `qemu-img measure` on the same inputs: every form (an image, `--size`), raw and qcow2
/// outputs, cluster sizes, preallocation modes, human and JSON output; and the property convert relies on for
/// its device-size check: what the qcow2 writer writes never exceeds `required`.
@Suite struct MeasureTests {
    /// Inputs of several formats and allocations, made with qemu-img from one pattern.
    static func makeInputs(_ directory: TemporaryDirectory) throws -> [(name: String, path: String)] {
        let raw = try TestPattern.writeRaw(to: directory.file("pattern.raw"), size: 12 << 20)
        let odd = try TestPattern.writeRaw(to: directory.file("odd.raw"), size: (12 << 20) + 1000)
        let dense = directory.file("dense.raw")
        try TestPattern.writeRaw(to: dense, size: 6 << 20)
        _ = try runProcess(["qemu-io", "-f", "raw", "-c", "write -P 0x11 0 6M", dense])
        var inputs: [(String, String)] = [("raw", raw), ("raw-odd-size", odd), ("raw-dense", dense)]
        func convert(_ name: String, _ arguments: [String]) throws {
            let path = directory.file(name)
            try qemuImg(["convert", "-f", "raw"] + arguments + [raw, path])
            inputs.append((name, path))
        }
        try convert("default.qcow2", ["-O", "qcow2"])
        try convert("c4k.qcow2", ["-O", "qcow2", "-o", "cluster_size=4096"])
        try convert("compressed.qcow2", ["-O", "qcow2", "-c"])
        try convert("v2.qcow2", ["-O", "qcow2", "-o", "compat=0.10"])
        try convert("sparse.vmdk", ["-O", "vmdk"])
        try convert("disk.vdi", ["-O", "vdi"])
        try convert("dynamic.vhd", ["-O", "vpc"])
        try convert("disk.vhdx", ["-O", "vhdx"])
        try convert("disk.qed", ["-O", "qed"])
        // Zero clusters (allocated as zero, not data), and a persistent bitmap.
        let zeroed = directory.file("zeroed.qcow2")
        try qemuImg("convert", "-f", "raw", "-O", "qcow2", dense, zeroed)
        try qemuImg("bitmap", "--add", "-g", "65536", zeroed, "b0")
        try qemuImg("bitmap", "--add", "-g", "512", zeroed, "a-longer-bitmap-name")
        _ = try runProcess(["qemu-io", "-f", "qcow2", "-c", "write -z 1M 2M", zeroed])
        inputs.append(("zeroed-bitmaps.qcow2", zeroed))
        // A backing chain: the overlay holds a little, the base the rest.
        let base = directory.file("base.qcow2")
        try qemuImg("convert", "-f", "raw", "-O", "qcow2", raw, base)
        let overlay = directory.file("overlay.qcow2")
        try qemuImg("create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", overlay)
        _ = try runProcess(["qemu-io", "-f", "qcow2", "-c", "write -P 0x7 8M 1M", overlay])
        inputs.append(("overlay.qcow2", overlay))
        return inputs
    }

    static let outputOptions: [[String]] = [
        ["-O", "raw"], ["-O", "qcow2"], ["-O", "qcow2", "-o", "cluster_size=512"], ["-O", "qcow2", "-o", "cluster_size=4k"],
        ["-O", "qcow2", "-o", "cluster_size=2M"], ["-O", "qcow2", "-o", "preallocation=metadata"],
        ["-O", "qcow2", "-o", "preallocation=falloc"], ["-O", "qcow2", "-o", "preallocation=full,cluster_size=16k"],
        ["-O", "qcow2", "-o", "refcount_bits=64"], ["-O", "qcow2", "-o", "extended_l2=on"],
        ["-O", "qcow2", "-o", "compat=0.10"],
    ]

    func expectSameAsQemu(_ arguments: [String], sourceLocation: SourceLocation = #_sourceLocation) throws {
        for output in [["--output", "json"], []] {
            let theirs = try runProcess(["qemu-img", "measure"] + output + arguments)
            let ours = try CLI.run(["measure"] + output + arguments)
            // Where qemu-img refuses (an L1 table past its limit), so must we.
            #expect(ours.status == theirs.status, "measure \(arguments): \(ours.stderr) / qemu-img: \(theirs.stderr)",
                    sourceLocation: sourceLocation)
            #expect(ours.stdout == theirs.stdout, "measure \(output + arguments):\nours:\n\(ours.stdout)\nqemu-img:\n\(theirs.stdout)",
                    sourceLocation: sourceLocation)
        }
    }

    @Test func imagesMeasureAsQemuImgMeasuresThem() throws {
        let directory = try TemporaryDirectory("kdct-measure")
        let inputs = try Self.makeInputs(directory)
        for input in inputs {
            for output in Self.outputOptions {
                try expectSameAsQemu(output + [input.path])
            }
        }
        // A declared input format, as scripts pass it.
        try expectSameAsQemu(["-f", "qcow2", "-O", "qcow2", directory.file("compressed.qcow2")])
    }

    @Test func sizesMeasureAsQemuImgMeasuresThem() throws {
        for size in ["0", "1", "512", "1000", "65536", "65537", "1G", "1.5G", "100G", "1T"] {
            try expectSameAsQemu(["--size", size])
            for output in Self.outputOptions.dropFirst() {
                try expectSameAsQemu(["--size", size] + output)
            }
        }
    }

    @Test func refusalsMatchQemuImg() throws {
        let directory = try TemporaryDirectory("kdct-measure")
        let image = try TestPattern.writeRaw(to: directory.file("a.raw"), size: 1 << 20)
        for arguments in [["--size", "1G", image], [], ["--size", "100T", "-O", "qcow2", "-o", "cluster_size=512"],
                          ["--size", "1G", "-O", "qcow2", "-o", "extended_l2=on,cluster_size=4k"],
                          ["--size", "1G", "-O", "qcow2", "-o", "compat=0.10,refcount_bits=8"],
                          ["--size", "1G", "-O", "vmdk"]] {
            #expect(try runProcess(["qemu-img", "measure"] + arguments).status == 1, "qemu-img accepts \(arguments)")
            let ours = try CLI.run(["measure"] + arguments)
            #expect(ours.status == 1, "measure \(arguments) accepted: \(ours.stdout)")
            #expect(ours.stdout.isEmpty)
        }
    }

    /// The QCOW2 writer's output is never larger than `required` (compressed or not, any cluster size): the
    /// bound convert checks a device's size against.
    @Test func writtenQCOW2NeverExceedsRequired() throws {
        let directory = try TemporaryDirectory("kdct-measure")
        for input in try Self.makeInputs(directory) {
            for (index, options) in [[], ["-c"], ["-o", "cluster_size=4k"], ["-c", "-o", "cluster_size=512"],
                                     ["-o", "cluster_size=2M"]].enumerated() {
                let clusterOptions = options.filter { $0 != "-c" }
                let measured = try CLI.run(["measure", "--output", "json", "-O", "qcow2"] + clusterOptions + [input.path])
                #expect(measured.status == 0, "\(measured.stderr)")
                let json = try JSONSerialization.jsonObject(with: Data(measured.stdout.utf8)) as? [String: Any]
                let required = try #require(json?["required"] as? Int)
                let out = directory.file("out-\(index)-\(input.name).qcow2")
                let result = try CLI.run(["convert", "-O", "qcow2"] + options + [input.path, out])
                #expect(result.status == 0, "\(result.stderr)")
                let written = Int(FilePaths.status(out)?.size ?? .max)
                #expect(written <= required, "\(input.name) \(options): wrote \(written) bytes, required \(required)")
                try expectQemuIdentical(input.path, out, formatB: "qcow2")
                try expectQemuCheckClean(out)
                FilePaths.remove(out)
            }
        }
    }
}
