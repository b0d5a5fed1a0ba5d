import Foundation
import KDCTFormats
import KDCTTestSupport
import Testing

/// What an input file looks like (content digest and modification time), to prove a command never wrote it.
struct FileFingerprint: Equatable, CustomStringConvertible {
    var sha256: String
    var modificationSeconds: Int
    var modificationNanoseconds: Int
    var size: Int

    init(_ path: String) throws {
        let digest = try runProcess(["sha256sum", path])
        guard digest.status == 0, let first = digest.stdout.split(separator: " ").first else {
            throw KDCTError(.io, "sha256sum \(path) failed: \(digest.stderr)")
        }
        sha256 = String(first)
        var st = stat()
        guard stat(path, &st) == 0 else { throw KDCTError(.io, "stat \(path) failed") }
        modificationSeconds = st.st_mtim.tv_sec
        modificationNanoseconds = st.st_mtim.tv_nsec
        size = Int(st.st_size)
    }

    var description: String { "sha256 \(sha256), mtime \(modificationSeconds).\(modificationNanoseconds), \(size) bytes" }
}

/// `kdct-native` run under `prlimit --as=1GiB --cpu=10` (util-linux), as a conversion service would run it on an
/// upload: a hostile image must end in an error within those bounds, not exhaust memory or spin.
enum ConfinedCLI {
    static let limits = ["prlimit", "--as=1073741824", "--cpu=10", "--"]

    /// Runs the CLI with `arguments` under the limits.
    static func run(_ arguments: [String]) throws -> ProcessResult {
        try runProcess(limits + [CLI.binary] + arguments)
    }

    /// Runs the CLI under the limits and strace, returning the result and every path the process (and its threads)
    /// passed to open/openat.
    static func runTracingOpens(_ arguments: [String], in directory: TemporaryDirectory) throws -> (ProcessResult, [String]) {
        let trace = directory.file("strace.log")
        let result = try runProcess(limits + ["strace", "-f", "-qq", "-e", "trace=open,openat", "-o", trace, CLI.binary]
                                    + arguments)
        let text = (try? String(contentsOfFile: trace, encoding: .utf8)) ?? ""
        FilePaths.remove(trace)
        let paths = text.split(separator: "\n").compactMap { line -> String? in
            guard let start = line.firstIndex(of: "\""), let end = line[line.index(after: start)...].firstIndex(of: "\"") else {
                return nil
            }
            return String(line[line.index(after: start)..<end])
        }
        return (result, paths)
    }
}

/// The names of the entries of a directory, sorted.
func directoryListing(_ path: String) -> [String] {
    ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted()
}
