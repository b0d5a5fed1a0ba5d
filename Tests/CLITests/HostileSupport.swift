import Foundation
import KDCTFormats
import KDCTTestSupport
import Testing

/// Byte-level reading and patching of test images (all test images are a few MiB, so whole-file reads are fine).
enum ImageBytes {
    /// The whole file.
    static func read(_ path: String) throws -> [UInt8] {
        [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
    }

    /// Replaces the file's content.
    static func write(_ bytes: [UInt8], to path: String) throws {
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }

    /// Overwrites `bytes` at `offset` (extending the file if needed).
    static func patch(_ path: String, at offset: Int, _ bytes: [UInt8]) throws {
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        try handle.seek(toOffset: UInt64(offset))
        handle.write(Data(bytes))
    }

    /// Appends `bytes` to the file.
    static func append(_ path: String, _ bytes: [UInt8]) throws {
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        try handle.seekToEnd()
        handle.write(Data(bytes))
    }

    static func be16(_ value: UInt16) -> [UInt8] { [UInt8(value >> 8), UInt8(value & 0xFF)] }
    static func be32(_ value: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: value >> (24 - 8 * $0)) } }
    static func be64(_ value: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: value >> (56 - 8 * $0)) } }
    static func le32(_ value: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) } }
    static func le64(_ value: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) } }

    /// Big-endian integer of `width` bytes at `offset` of the file.
    static func bigEndian(_ path: String, at offset: Int, width: Int) throws -> UInt64 {
        let bytes = try read(path)
        return bytes[offset..<(offset + width)].reduce(0) { $0 << 8 | UInt64($1) }
    }

    /// Little-endian integer of `width` bytes at `offset` of the file.
    static func littleEndian(_ path: String, at offset: Int, width: Int) throws -> UInt64 {
        let bytes = try read(path)
        return bytes[offset..<(offset + width)].reversed().reduce(0) { $0 << 8 | UInt64($1) }
    }
}

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
