import Foundation
import KDCTFormats
import KDCTTestSupport
import Testing

/// The built `kdct-native` binary, run as a user would: exit statuses, output shapes, atomic outputs.
@Suite struct CLITests {
    @Test func convertInfoMapChecksumCompareCheck() throws {
        let dir = try TemporaryDirectory()
        let source = try TestPattern.writeRaw(to: dir.file("src.raw"), size: 6 << 20 + 1024)
        let out = dir.file("out.qcow2")
        let convert = try CLI.run(["convert", "-O", "qcow2", "-c", "-m", "2", source, out])
        #expect(convert.status == 0, "\(convert.stderr)")
        try expectQemuIdentical(source, out, formatA: "raw", formatB: "qcow2")
        try expectQemuCheckClean(out)

        let info = try CLI.run(["info", "--output", "json", out])
        #expect(info.status == 0)
        let json = try JSONSerialization.jsonObject(with: Data(info.stdout.utf8)) as? [String: Any]
        #expect(json?["format"] as? String == "qcow2")
        #expect(json?["virtual-size"] as? Int == Int(6 << 20 + 1024))
        #expect(json?["cluster-size"] as? Int == 65536)
        #expect(json?["dirty-flag"] as? Bool == false)
        #expect(json?["format-specific"] != nil)

        let human = try CLI.run(["info", out])
        #expect(human.stdout.contains("file format: qcow2"))

        let map = try CLI.run(["map", "--output", "json", out])
        #expect(map.status == 0)
        let extents = try JSONSerialization.jsonObject(with: Data(map.stdout.utf8)) as? [[String: Any]]
        #expect(extents?.contains { $0["compressed"] as? Bool == true } == true)
        let total = extents?.reduce(0) { $0 + ($1["length"] as? Int ?? 0) }
        #expect(total == 6 << 20 + 1024)

        let ours = try CLI.run(["checksum", out])
        let theirs = try CLI.run(["checksum", "-f", "raw", source])
        #expect(ours.status == 0)
        #expect(ours.stdout.split(separator: " ").first == theirs.stdout.split(separator: " ").first)

        #expect(try CLI.run(["compare", source, out]).status == 0)
        let check = try CLI.run(["check", out])
        #expect(check.status == 0)
        #expect(check.stdout.contains("No errors were found"))
    }

    @Test func compareExitStatuses() throws {
        let dir = try TemporaryDirectory()
        let a = try TestPattern.writeRaw(to: dir.file("a.raw"), size: 2 << 20)
        let b = dir.file("b.raw")
        try FileManager.default.copyItem(atPath: a, toPath: b)
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: b))
        try handle.seek(toOffset: 1_000_000)
        handle.write(Data([0x42]))
        try handle.close()
        let differ = try CLI.run(["compare", a, b])
        #expect(differ.status == 1)
        #expect(differ.stdout.contains("Content mismatch at offset 1000000"))
        let error = try CLI.run(["compare", a, dir.file("missing.raw")])
        #expect(error.status == 2)
        #expect(error.stderr.contains("missing.raw"))
    }

    @Test func errorsAreOneLineWithStatusOneAndNoOutput() throws {
        let dir = try TemporaryDirectory()
        let fake = dir.file("disk.vmdk")
        try Data(repeating: 0x41, count: 4096).write(to: URL(fileURLWithPath: fake))
        let out = dir.file("out.qcow2")
        let result = try CLI.run(["convert", "-O", "qcow2", fake, out])
        #expect(result.status == 1)
        #expect(result.stderr.contains("disk.vmdk"))
        #expect(result.stderr.contains("matches no image format"))
        #expect(result.stderr.split(separator: "\n").count == 1)
        #expect(!FileManager.default.fileExists(atPath: out))

        let exists = dir.file("exists.raw")
        try Data("x".utf8).write(to: URL(fileURLWithPath: exists))
        let source = try TestPattern.writeRaw(to: dir.file("src.raw"), size: 1 << 20)
        let refused = try CLI.run(["convert", source, exists])
        #expect(refused.status == 1)
        #expect(refused.stderr.contains("--force"))
        #expect(try CLI.run(["convert", "--force", source, exists]).status == 0)

        let badFormat = try CLI.run(["info", "-f", "qcow2", source])
        #expect(badFormat.status == 1)
        #expect(badFormat.stderr.contains("declared format qcow2"))

        let usage = try CLI.run(["convert", "-O", "vdi", source, dir.file("x")])
        #expect(usage.status == 1)
    }

    @Test func jsonProgressLines() throws {
        let dir = try TemporaryDirectory()
        let source = try TestPattern.writeRaw(to: dir.file("src.raw"), size: 8 << 20)
        let result = try CLI.run(["convert", "--progress", "json", "-O", "qcow2", source, dir.file("o.qcow2")])
        #expect(result.status == 0)
        let lines = result.stdout.split(separator: "\n")
        #expect(lines.count >= 2)
        for line in lines.dropLast() {
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
            #expect(object?["event"] as? String == "progress")
            #expect(object?["total"] as? Int == 8 << 20)
        }
        let complete = try JSONSerialization.jsonObject(with: Data(lines[lines.count - 2].utf8)) as? [String: Any]
        #expect(complete?["processed"] as? Int == 8 << 20)
        let last = try JSONSerialization.jsonObject(with: Data((lines.last ?? "").utf8)) as? [String: Any]
        #expect(last?["event"] as? String == "done")
        // -p draws nothing when stderr is not a terminal.
        let quiet = try CLI.run(["convert", "-p", "-O", "qcow2", source, dir.file("p.qcow2")])
        #expect(quiet.status == 0)
        #expect(quiet.stderr.isEmpty)
    }

    @Test func sigkillLeavesNoDestination() throws {
        let dir = try TemporaryDirectory()
        let source = try TestPattern.writeRaw(to: dir.file("src.raw"), size: 1 << 30)
        // Fill the guest with data so the conversion takes a while.
        _ = try runProcess(["qemu-io", "-f", "raw", "-c", "write -P 0x61 0 512M", source])
        let out = dir.file("out.qcow2")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: CLI.binary)
        process.arguments = ["convert", "-c", "-O", "qcow2", source, out]
        try process.run()
        usleep(300_000)
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        #expect(process.terminationReason == .uncaughtSignal)
        #expect(!FileManager.default.fileExists(atPath: out))
    }

    @Test func formatsListsEveryFormat() throws {
        let result = try CLI.run(["formats"])
        #expect(result.status == 0)
        for format in ImageFormat.allCases { #expect(result.stdout.contains(format.rawValue)) }
    }
}
