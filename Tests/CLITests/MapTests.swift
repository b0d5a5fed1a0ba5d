import Foundation
import KDCTFormats
import KDCTTestSupport
import Testing

/// `map` against `qemu-img map` on the same images: human output byte for byte (each data run named by the file
/// that holds it, as qemu-img names it), and JSON values equal (qemu's keys; kdct-native adds `compressed`).
@Suite struct MapTests {
    /// Runs `command` (a path, then arguments) in `directory`.
    static func run(in directory: String, _ command: [String]) throws -> ProcessResult {
        try runProcess(["sh", "-c", "cd \"$0\" && exec \"$@\"", directory] + command)
    }

    /// Both tools' `map` of `image` (as named, from `directory`): human output equal, JSON values equal.
    static func expectMapsLikeQemu(_ image: String, in directory: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let ours = try run(in: directory, [CLI.binary, "map", image])
        let theirs = try run(in: directory, ["qemu-img", "map", image])
        #expect(ours.status == 0 && theirs.status == 0, "\(ours.stderr) \(theirs.stderr)", sourceLocation: sourceLocation)
        #expect(ours.stdout == theirs.stdout, "kdct-native:\n\(ours.stdout)\nqemu-img:\n\(theirs.stdout)",
                sourceLocation: sourceLocation)
        let oursJSON = try run(in: directory, [CLI.binary, "map", "--output", "json", image])
        let theirsJSON = try run(in: directory, ["qemu-img", "map", "--output=json", image])
        let parsed = try JSONSerialization.jsonObject(with: Data(oursJSON.stdout.utf8)) as? [[String: Any]] ?? []
        let expected = try JSONSerialization.jsonObject(with: Data(theirsJSON.stdout.utf8)) as? [[String: Any]] ?? []
        #expect(!expected.isEmpty, sourceLocation: sourceLocation)
        #expect(parsed.allSatisfy { $0["compressed"] is Bool }, sourceLocation: sourceLocation)
        // qemu 7.2 has no `compressed` key (newer versions have it): compare the keys qemu prints.
        let stripped = parsed.map { $0.filter { $0.key != "compressed" || expected.first?[$0.key] != nil } }
        #expect(NSArray(array: stripped).isEqual(to: expected), "kdct-native:\n\(oursJSON.stdout)\nqemu-img:\n\(theirsJSON.stdout)",
                sourceLocation: sourceLocation)
    }

    /// Issue 12, bug 4: a three-layer chain of different sizes (data at every depth, zero clusters with and without
    /// a preallocated cluster, a discard, runs past the end of a shorter backing file). The human output names
    /// `base.qcow2` and `mid.qcow2` for runs they hold, relative or absolute as the top image was named.
    @Test func backingChainNamesTheLayerOfEachExtent() throws {
        let dir = try TemporaryDirectory("kdct-map")
        let steps: [[String]] = [
            ["qemu-img", "create", "-q", "-f", "qcow2", "base.qcow2", "4M"],
            ["qemu-io", "-f", "qcow2", "-c", "write -P 1 0 1M", "-c", "write -P 2 2M 512k", "base.qcow2"],
            ["qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "mid.qcow2", "6M"],
            ["qemu-io", "-f", "qcow2", "-c", "write -P 3 512k 1M", "-c", "write -z 3M 64k", "-c", "write -z 640k 64k",
             "-c", "discard 768k 64k", "mid.qcow2"],
            ["qemu-img", "create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", "top.qcow2", "8M"],
            ["qemu-io", "-f", "qcow2", "-c", "write -P 4 1536k 64k", "-c", "write -z -u 5M 64k", "top.qcow2"],
        ]
        for step in steps {
            let result = try Self.run(in: dir.path, step)
            #expect(result.status == 0, "\(step): \(result.stderr)")
        }
        try Self.expectMapsLikeQemu("top.qcow2", in: dir.path)
        try Self.expectMapsLikeQemu(dir.file("top.qcow2"), in: "/")
        let human = try Self.run(in: dir.path, [CLI.binary, "map", "top.qcow2"]).stdout
        for layer in ["base.qcow2", "mid.qcow2", "top.qcow2"] {
            #expect(human.split(separator: "\n").contains { $0.hasSuffix(" " + layer) }, "\(layer) in:\n\(human)")
        }
    }

    /// A VMDK split into 2 GiB extent files: each run is named by its extent file, with its offset in that file.
    @Test func splitVMDKNamesItsExtentFiles() throws {
        let dir = try TemporaryDirectory("kdct-map")
        for step in [["qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentSparse", "split.vmdk", "5G"],
                     ["qemu-io", "-f", "vmdk", "-c", "write -P 1 0 1M", "-c", "write -P 2 2047M 2M", "split.vmdk"]] {
            let result = try Self.run(in: dir.path, step)
            #expect(result.status == 0, "\(step): \(result.stderr)")
        }
        try Self.expectMapsLikeQemu("split.vmdk", in: dir.path)
        let human = try Self.run(in: dir.path, [CLI.binary, "map", "split.vmdk"]).stdout
        #expect(human.contains("split-s001.vmdk") && human.contains("split-s002.vmdk"), "\(human)")
    }

    /// A QED chain over a raw backing file, and a VMDK delta over its parent.
    @Test(arguments: [("qed", "raw"), ("vmdk", "vmdk")])
    func otherChains(_ format: String, _ backingFormat: String) throws {
        let dir = try TemporaryDirectory("kdct-map")
        let base = "base.\(backingFormat)"
        for step in [["qemu-img", "create", "-q", "-f", backingFormat, base, "4M"],
                     ["qemu-io", "-f", backingFormat, "-c", "write -P 1 64k 1M", base],
                     ["qemu-img", "create", "-q", "-f", format, "-b", base, "-F", backingFormat, "top.\(format)", "4M"],
                     ["qemu-io", "-f", format, "-c", "write -P 2 512k 64k", "top.\(format)"]] {
            let result = try Self.run(in: dir.path, step)
            #expect(result.status == 0, "\(step): \(result.stderr)")
        }
        try Self.expectMapsLikeQemu("top.\(format)", in: dir.path)
    }
}
