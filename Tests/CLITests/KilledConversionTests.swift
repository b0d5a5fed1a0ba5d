import Foundation
import KDCTFormats
import KDCTTestSupport
import Testing

/// A conversion killed with SIGKILL part-way (no chance to clean up) leaves nothing under the destination name:
/// raw, qcow2 and compressed qcow2 outputs are written to a temporary file beside it and renamed only when complete.
/// The orphaned temporary file is removed by the next conversion to the same destination.
@Suite(.serialized) struct KilledConversionTests {
    @Test func sigkillPartWayLeavesNoDestination() throws {
        let directory = try TemporaryDirectory("kdct-kill")
        let source = directory.file("src.raw")
        try TestPattern.writeRaw(to: source, size: 1 << 30)
        // 768 MiB of random guest data, so every conversion below takes a while, the compressed one too (a
        // repeated byte compresses so fast that the conversion could finish between two polls on a loaded machine).
        let fill = try runProcess(["dd", "if=/dev/urandom", "of=\(source)", "bs=1M", "count=768", "conv=notrunc", "status=none"])
        try #require(fill.status == 0, "dd: \(fill.stderr)")
        let sourceBefore = try FileFingerprint(source)
        let small = try TestPattern.writeRaw(to: directory.file("small.raw"), size: 12 << 20)

        for (name, arguments) in [("out.raw", ["-O", "raw"]), ("out.qcow2", ["-O", "qcow2"]),
                                  ("out-c.qcow2", ["-O", "qcow2", "-c"])] {
            let destination = directory.file(name)
            let process = Process()
            process.executableURL = URL(fileURLWithPath: CLI.binary)
            process.arguments = ["convert", "-m", "1"] + arguments + [source, destination]
            try process.run()
            // Wait (up to a minute, for a loaded machine) until the temporary output exists with a size: the
            // conversion is then part-way (a raw output is sized first, a qcow2 one grows as data streams).
            var temporary: String?
            for _ in 0..<30_000 {
                let listing = directoryListing(directory.path)
                if let part = listing.first(where: { $0.hasPrefix(".\(name).kdct-") && $0.hasSuffix(".part") }) {
                    var st = stat()
                    if stat(directory.file(part), &st) == 0, st.st_blocks > 0 || st.st_size > 0 {
                        temporary = part
                        break
                    }
                }
                usleep(2_000)
            }
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            #expect(temporary != nil, "\(name): no temporary output appeared")
            #expect(process.terminationReason == .uncaughtSignal, "\(name): the conversion finished before the kill")
            #expect(!FileManager.default.fileExists(atPath: destination), "\(name) exists after SIGKILL")
            // The partial file keeps its temporary name (nothing runs after SIGKILL to remove it)...
            let leftovers = directoryListing(directory.path).filter { $0.hasPrefix(".\(name).kdct-") && $0.hasSuffix(".part") }
            #expect(!leftovers.isEmpty, "\(name): no partial file left after SIGKILL")
            // ...until the next conversion to that destination: nobody holds its lock, so it is removed (issue 12,
            // bug 7), and the new output is complete.
            let rerun = try CLI.run(["convert", "-m", "2"] + arguments + [small, destination])
            #expect(rerun.status == 0, "\(name): \(rerun.stderr)")
            #expect(!directoryListing(directory.path).contains { $0.hasSuffix(".part") }, "\(name): stale temporary file kept")
            try expectQemuIdentical(small, destination, formatA: "raw", formatB: name.hasSuffix("qcow2") ? "qcow2" : "raw")
        }
        #expect(try FileFingerprint(source) == sourceBefore)
    }
}
