import Foundation
import KDCTFormats
import KDCTTestSupport
import Testing

/// "Never write an input": every command on every committed fixture and corpus image leaves every input file (and
/// every file it references) byte-identical with the same mtime; and, at source level, readers only ever get a
/// `ReadOnlyFile` (O_RDONLY).
@Suite struct NeverWriteTests {
    /// Guest size up to which `checksum` and `compare` (which read every guest byte) are run too.
    static let fullReadLimit: UInt64 = 256 << 20

    /// Fingerprints of every regular file under `directory`, by path.
    static func fingerprints(under directory: String) throws -> [String: FileFingerprint] {
        var result: [String: FileFingerprint] = [:]
        let enumerator = FileManager.default.enumerator(atPath: directory)
        while let relative = enumerator?.nextObject() as? String {
            let path = directory + "/" + relative
            guard FilePaths.isRegularFile(path) else { continue }
            result[path] = try FileFingerprint(path)
        }
        return result
    }

    /// Runs info, map, check, convert (and for small guests checksum and compare) on `image`; returns how many
    /// commands ran. Failures are fine (some inputs are corrupt on purpose); only the files matter here.
    static func runEveryCommand(on image: String, virtualSize: UInt64?, output: TemporaryDirectory) throws -> Int {
        var commands: [[String]] = [
            ["info", image], ["info", "--output", "json", image], ["map", "--output", "json", image], ["check", image],
            ["convert", "-O", "qcow2", "-c", image, output.file("out.qcow2")],
        ]
        if let virtualSize, virtualSize <= fullReadLimit {
            commands += [["checksum", image], ["compare", image, image],
                         ["convert", "-O", "raw", image, output.file("out.raw")]]
        }
        for command in commands {
            let result = try CLI.run(command)
            // A crash (signal) is never acceptable, even on a corrupt input.
            #expect(result.status >= 0 && result.status <= 3, "\(command): status \(result.status) \(result.stderr)")
            FilePaths.remove(output.file("out.qcow2"))
            FilePaths.remove(output.file("out.raw"))
        }
        return commands.count
    }

    @Test func fixturesAreNeverWritten() throws {
        let output = try TemporaryDirectory("kdct-never-write")
        let before = try Self.fingerprints(under: Fixtures.imageDirectory)
        #expect(before.count >= 10, "fixtures missing under \(Fixtures.imageDirectory)")
        var ran = 0
        for path in before.keys.sorted() {
            let size = UInt64(before[path]?.size ?? 0)
            ran += try Self.runEveryCommand(on: path, virtualSize: size <= Self.fullReadLimit ? size : nil, output: output)
        }
        #expect(ran > 0)
        let after = try Self.fingerprints(under: Fixtures.imageDirectory)
        #expect(after == before, "fixture files changed: \(Set(after.keys).union(before.keys).filter { after[$0] != before[$0] })")
    }

    @Test func corpusIsNeverWritten() throws {
        guard let (directory, entries) = Corpus.load() else { return }
        let output = try TemporaryDirectory("kdct-never-write")
        let before = try Self.fingerprints(under: directory)
        var ran = 0
        for entry in entries {
            let path = directory + "/" + entry.file
            guard FilePaths.isRegularFile(path) else { continue }
            ran += try Self.runEveryCommand(on: path, virtualSize: entry.virtual_size, output: output)
        }
        #expect(ran > 0)
        let after = try Self.fingerprints(under: directory)
        #expect(after == before, "corpus files changed: \(Set(after.keys).union(before.keys).filter { after[$0] != before[$0] })")
    }

    /// Source-level check: the readers, chains, codecs, core and appliance readers reach files only through
    /// `ReadOnlyFile`, which opens with O_RDONLY; no write-capable call appears outside the writers (Writers/,
    /// Convert/, the appliance converter and domain XML writer) and FileIO.swift's `WritableFile`.
    @Test func readersOnlyOpenFilesReadOnly() throws {
        let sources = packageRoot.appendingPathComponent("Sources").path
        // Opening for writing needs one of the O_ flags below (or fopen/creat/FileHandle/FileManager); writing needs
        // write/pwrite/ftruncate/fallocate.
        let forbidden = ["WritableFile", "O_RDWR", "O_WRONLY", "O_CREAT", "O_TRUNC", "O_APPEND", "pwrite(", "Glibc.write(",
                         "ftruncate(", "fallocate", "fopen(", "FileHandle(", "unlink(", "rename(", "FileManager",
                         "Glibc.open(", "creat(", "mmap("]
        // A read-only mapping (PROT_READ without PROT_WRITE) cannot change the file: SourceCacheMonitor maps a
        // range only to ask mincore which of its pages are cached.
        func isReadOnlyMapping(_ code: String) -> Bool {
            code.contains("mmap(") && code.contains("PROT_READ") && !code.contains("PROT_WRITE")
        }
        var scanned = 0
        for area in ["KDCTFormats/Formats", "KDCTFormats/Chains", "KDCTFormats/Codecs", "KDCTFormats/Core", "KDCTAppliance"] {
            let enumerator = FileManager.default.enumerator(atPath: sources + "/" + area)
            while let relative = enumerator?.nextObject() as? String {
                guard relative.hasSuffix(".swift") else { continue }
                let path = sources + "/" + area + "/" + relative
                // FileIO.swift holds WritableFile itself; the appliance converter and the libvirt domain writer
                // write outputs (through WritableFile and the writers), never inputs.
                if ["KDCTFormats/Core/FileIO.swift", "KDCTAppliance/ApplianceConverter.swift", "KDCTAppliance/LibvirtDomain.swift"]
                    .contains(area + "/" + relative) { continue }
                scanned += 1
                let text = try String(contentsOfFile: path, encoding: .utf8)
                for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                    let code = line.components(separatedBy: "//").first ?? ""
                    for token in forbidden where code.contains(token) && !(token == "mmap(" && isReadOnlyMapping(code)) {
                        Issue.record("\(area)/\(relative):\(number + 1) uses \(token): \(line)")
                    }
                }
            }
        }
        #expect(scanned > 30)

        // In FileIO.swift, ReadOnlyFile opens with O_RDONLY and has no write call.
        let fileIO = try String(contentsOfFile: sources + "/KDCTFormats/Core/FileIO.swift", encoding: .utf8)
        guard let start = fileIO.range(of: "public final class ReadOnlyFile"),
              let end = fileIO.range(of: "public struct FileIdentity") else {
            Issue.record("ReadOnlyFile not found in FileIO.swift")
            return
        }
        let readOnly = String(fileIO[start.lowerBound..<end.lowerBound])
        #expect(readOnly.contains("open(path, O_RDONLY | O_CLOEXEC)"))
        for token in ["O_RDWR", "O_WRONLY", "O_CREAT", "pwrite(", "ftruncate(", "fallocate"] {
            #expect(!readOnly.contains(token), "ReadOnlyFile uses \(token)")
        }
    }
}
