import Foundation
import KDCTFormats
import KDCTTestSupport
import Testing

/// `--read-ahead N` on convert, checksum and export: 0 (off) to 256 accepted, anything else refused before any
/// output appears; the output and the digest are the same for every depth.
@Suite struct ReadAheadFlagTests {
    @Test func convertAndChecksumAcceptZeroToTheBound() throws {
        let dir = try TemporaryDirectory("kdct-readahead-cli")
        let source = try TestPattern.writeRaw(to: dir.file("src.raw"), size: 6 << 20)
        let qcow2 = dir.file("src.qcow2")
        try qemuImg("convert", "-q", "-f", "raw", "-O", "qcow2", source, qcow2)
        let expected = String(try runProcess(["sha256sum", source]).stdout.prefix(64))
        var outputs: [Data] = []
        for depth in ["0", "1", "16", "256"] {
            let output = dir.file("out-\(depth).qcow2")
            let result = try CLI.run(["convert", "--read-ahead", depth, "-m", depth == "1" ? "1" : "2", "-O", "qcow2", qcow2, output])
            #expect(result.status == 0, "--read-ahead \(depth): \(result.stderr)")
            try expectQemuIdentical(source, output, formatA: "raw", formatB: "qcow2")
            try expectQemuCheckClean(output)
            outputs.append(try Data(contentsOf: URL(fileURLWithPath: output)))
            let sum = try CLI.run(["checksum", "--read-ahead", depth, qcow2])
            #expect(sum.status == 0, "\(sum.stderr)")
            #expect(sum.stdout.hasPrefix(expected + " "), "checksum --read-ahead \(depth): \(sum.stdout)")
        }
        #expect(Set(outputs).count == 1, "outputs differ between read-ahead depths")
    }

    @Test func outOfRangeDepthsAreRefused() throws {
        let dir = try TemporaryDirectory("kdct-readahead-cli-bad")
        let source = try TestPattern.writeRaw(to: dir.file("src.raw"), size: 1 << 20)
        for depth in ["-1", "257", "99999999999999999999", "many"] {
            let output = dir.file("out.raw")
            let convert = try CLI.run(["convert", "--read-ahead=\(depth)", "-O", "raw", source, output])
            #expect(convert.status != 0, "convert --read-ahead \(depth) was accepted")
            #expect(convert.stderr.contains("read-ahead"), "\(convert.stderr)")
            #expect(!FileManager.default.fileExists(atPath: output))
            let sum = try CLI.run(["checksum", "--read-ahead=\(depth)", source])
            #expect(sum.status != 0 && sum.stderr.contains("read-ahead"), "checksum --read-ahead \(depth): \(sum.stderr)")
            let export = try CLI.run(["export", "--read-ahead=\(depth)", source, "nobody@127.0.0.1:/tmp/x"])
            #expect(export.status != 0 && export.stderr.contains("read-ahead"), "export --read-ahead \(depth): \(export.stderr)")
        }
    }
}
