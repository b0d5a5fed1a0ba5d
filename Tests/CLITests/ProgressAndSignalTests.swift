import Foundation
import KDCTFormats
import KDCTTestSupport
import Testing

/// `--progress json` as the shared spec lays it out (issue 12, bug 8) and the exit statuses of an interrupted
/// conversion (bug 9: 130 after SIGINT, 143 after SIGTERM, nothing left behind).
@Suite(.serialized) struct ProgressAndSignalTests {
    /// The JSON objects of `--progress json` output, one per line.
    func events(_ stdout: String) throws -> [[String: Any]] {
        try stdout.split(separator: "\n").map { line in
            guard let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
                throw KDCTError(.invalidFormat, "not a JSON object: \(line)")
            }
            return object
        }
    }

    /// True when `value` is a JSON number (a string of digits is not).
    func isNumber(_ value: Any?) -> Bool { value is NSNumber && !(value is String) }

    @Test func progressLinesHaveNumbersAndOneFinalObject() throws {
        let directory = try TemporaryDirectory("kdct-progress")
        let source = try TestPattern.writeRaw(to: directory.file("src.raw"), size: 64 << 20)
        _ = try runProcess(["qemu-io", "-f", "raw", "-c", "write -P 0x33 0 48M", source])
        let out = directory.file("out.qcow2")
        let result = try CLI.run(["convert", "--progress", "json", "-m", "1", "-O", "qcow2", source, out])
        #expect(result.status == 0, "\(result.stderr)")
        let lines = try events(result.stdout)
        try #require(lines.count >= 2)
        let progress = lines.dropLast()
        for line in progress {
            #expect(line["event"] as? String == "progress")
            #expect(line["phase"] as? String == "converting")
            for key in ["processed", "total", "percent", "elapsed-seconds", "bytes-per-second", "data-read"] {
                #expect(isNumber(line[key]), "\(key) is not a JSON number: \(line)")
            }
            #expect(isNumber(line["eta-seconds"]) || line["eta-seconds"] is NSNull, "eta-seconds: \(line)")
            #expect(line["total"] as? Int == 64 << 20)
        }
        let complete = progress.filter { ($0["processed"] as? Int) == 64 << 20 }
        #expect(complete.count == 1, "the 100% line must appear exactly once, not \(complete.count) times")
        #expect((complete.first?["percent"] as? Double) == 100)
        let done = try #require(lines.last)
        #expect(done["event"] as? String == "done")
        #expect(isNumber(done["elapsed-seconds"]))
        #expect(done["output"] as? String == out)
        #expect(done["virtual-size"] as? Int == 64 << 20)
        try expectQemuIdentical(source, out, formatA: "raw", formatB: "qcow2")
    }

    @Test func aFailureEndsTheStreamWithAFailedObject() throws {
        let directory = try TemporaryDirectory("kdct-progress")
        let source = try TestPattern.writeRaw(to: directory.file("src.raw"), size: 4 << 20)
        let existing = directory.file("exists.raw")
        try Data("x".utf8).write(to: URL(fileURLWithPath: existing))
        let result = try CLI.run(["convert", "--progress", "json", source, existing])
        #expect(result.status == 1)
        let last = try #require(try events(result.stdout).last)
        #expect(last["event"] as? String == "failed")
        #expect(last["exit-status"] as? Int == 1)
        #expect(isNumber(last["elapsed-seconds"]))
        let error = last["error"] as? [String: Any]
        #expect(error?["code"] as? String == "already-exists")
        #expect(error?["file"] as? String == existing)
        #expect((error?["message"] as? String)?.isEmpty == false)
    }

    /// Starts a slow conversion, waits until its temporary output exists, sends `signal`; returns the exit status,
    /// stdout, and whether anything was left in the folder.
    func interrupt(with signal: Int32, directory: TemporaryDirectory, source: String) throws -> (Int32, String, [String]) {
        let destination = directory.file("out-\(signal).qcow2")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: CLI.binary)
        process.arguments = ["convert", "--progress", "json", "-m", "1", "-c", "-O", "qcow2", source, destination]
        let stdout = Pipe()
        process.standardOutput = stdout
        try process.run()
        var started = false
        for _ in 0..<30_000 {
            let listing = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
            if listing.contains(where: { $0.hasPrefix(".out-\(signal).qcow2.kdct-") }) {
                started = true
                break
            }
            usleep(2_000)
        }
        #expect(started, "no temporary output appeared")
        usleep(100_000)
        kill(process.processIdentifier, signal)
        let output = stdout.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        #expect(process.terminationReason == .exit, "killed by the signal instead of exiting")
        let left = ((try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? [])
            .filter { $0.hasPrefix("out-\(signal)") || $0.hasPrefix(".out-\(signal)") }
        return (process.terminationStatus, String(decoding: output, as: UTF8.self), left)
    }

    @Test(arguments: [(SIGINT, 130), (SIGTERM, 143)])
    func signalsEndWithTheShellStatusAndLeaveNothing(_ signal: Int32, _ expected: Int) throws {
        let directory = try TemporaryDirectory("kdct-signal")
        let source = try TestPattern.writeRaw(to: directory.file("src.raw"), size: 1 << 30)
        _ = try runProcess(["qemu-io", "-f", "raw", "-c", "write -P 0x61 0 768M", source])
        let (status, stdout, left) = try interrupt(with: signal, directory: directory, source: source)
        #expect(status == Int32(expected), "signal \(signal) ended with \(status)")
        #expect(left.isEmpty, "left behind: \(left)")
        let last = try #require(try events(stdout).last)
        #expect(last["event"] as? String == "failed")
        #expect(last["exit-status"] as? Int == expected)
        #expect((last["error"] as? [String: Any])?["code"] as? String == "cancelled")
    }
}
