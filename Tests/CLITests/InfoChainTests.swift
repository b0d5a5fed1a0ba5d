import Foundation
import KDCTFormats
import KDCTTestSupport
import Testing

/// `info --backing-chain` and the `full-backing-filename` / `backing-filename-format` keys against `qemu-img info`
/// on the same chains, named relatively and absolutely: every key qemu-img prints has qemu's value in ours (which
/// adds its own keys), layer by layer.
@Suite struct InfoChainTests {
    static func run(in directory: String, _ command: [String]) throws -> ProcessResult {
        try runProcess(["sh", "-c", "cd \"$0\" && exec \"$@\"", directory] + command)
    }

    /// Each of qemu's keys has qemu's value in ours.
    static func expectContains(_ ours: [String: Any], _ theirs: [String: Any], _ label: String,
                               sourceLocation: SourceLocation = #_sourceLocation) {
        // Compared as canonical JSON text (sorted keys), which also compares nested objects.
        let canonical = { (value: Any) -> String in
            let data = try? JSONSerialization.data(withJSONObject: ["v": value], options: [.sortedKeys])
            return data.map { String(decoding: $0, as: UTF8.self) } ?? "?"
        }
        for (key, value) in theirs {
            let mine = ours[key].map(canonical) ?? "missing"
            #expect(mine == canonical(value), "\(label): \(key) is \(mine), qemu-img says \(canonical(value))",
                    sourceLocation: sourceLocation)
        }
    }

    @Test func backingChainsAreListedAsQemuImgListsThem() throws {
        let dir = try TemporaryDirectory("kdct-info-chain")
        for step in [["qemu-img", "create", "-q", "-f", "raw", "base.raw", "8M"],
                     ["qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", "mid.qcow2"],
                     ["qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4k", "-b", "mid.qcow2", "-F", "qcow2",
                      "top.qcow2", "16M"]] {
            #expect(try Self.run(in: dir.path, step).status == 0)
        }
        for (directory, name) in [(dir.path, "top.qcow2"), ("/", dir.file("top.qcow2"))] {
            let ours = try Self.run(in: directory, [CLI.binary, "info", "--backing-chain", "--output", "json", name])
            let theirs = try Self.run(in: directory, ["qemu-img", "info", "--backing-chain", "--output", "json", name])
            #expect(ours.status == 0, "\(ours.stderr)")
            let oursList = try JSONSerialization.jsonObject(with: Data(ours.stdout.utf8)) as? [[String: Any]] ?? []
            let theirsList = try JSONSerialization.jsonObject(with: Data(theirs.stdout.utf8)) as? [[String: Any]] ?? []
            #expect(oursList.count == 3 && theirsList.count == 3, "\(ours.stdout)")
            for (layer, (mine, expected)) in zip(oursList, theirsList).enumerated() {
                Self.expectContains(mine, expected, "\(name) layer \(layer)")
            }
            // Human: the layers in qemu's order and names, separated by a blank line.
            let human = try Self.run(in: directory, [CLI.binary, "info", "--backing-chain", name]).stdout
            let qemuHuman = try Self.run(in: directory, ["qemu-img", "info", "--backing-chain", name]).stdout
            let images = { (text: String) in text.split(separator: "\n").filter { $0.hasPrefix("image: ") } }
            #expect(images(human) == images(qemuHuman), "\(human)")
            #expect(human.components(separatedBy: "\n\nimage: ").count == 3, "\(human)")
            // Without --backing-chain: the top layer's keys, full-backing-filename included.
            let single = try Self.run(in: directory, [CLI.binary, "info", "--output", "json", name]).stdout
            let qemuSingle = try Self.run(in: directory, ["qemu-img", "info", "--output", "json", name]).stdout
            Self.expectContains(try JSONSerialization.jsonObject(with: Data(single.utf8)) as? [String: Any] ?? [:],
                                try JSONSerialization.jsonObject(with: Data(qemuSingle.utf8)) as? [String: Any] ?? [:],
                                "\(name) info")
        }
        // A layer the reference policy refuses: the chain cannot be listed.
        try qemuImg("create", "-q", "-f", "qcow2", "-b", dir.file("base.raw"), "-F", "raw", dir.file("absolute.qcow2"))
        let refused = try CLI.run(["info", "--backing-chain", dir.file("absolute.qcow2")])
        #expect(refused.status == 1 && refused.stderr.contains("--references"), "\(refused.stderr)")
        #expect(try CLI.run(["info", "--backing-chain", "--references", "any", dir.file("absolute.qcow2")]).status == 0)
    }
}
