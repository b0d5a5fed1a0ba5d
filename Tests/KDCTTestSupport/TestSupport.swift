import Foundation
import Synchronization
import Testing
import KDCTFormats

/// A fresh directory under the system temp dir, removed when the value is released.
public final class TemporaryDirectory: Sendable {
    public let path: String

    public init(_ label: String = "kdct-test") throws {
        var template = Array((NSTemporaryDirectory() + "/\(label)-XXXXXX").utf8CString)
        guard let result = mkdtemp(&template) else { throw KDCTError(.io, "mkdtemp failed") }
        path = String(cString: result)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    /// `path/name`.
    public func file(_ name: String) -> String { path + "/" + name }
}

/// Result of running an external program (qemu-img, the CLI) in a test.
public struct ProcessResult {
    public var status: Int32
    public var stdout: String
    public var stderr: String
}

/// Runs `arguments[0]` (looked up in PATH) with the rest as arguments and waits for it.
@discardableResult
public func runProcess(_ arguments: [String], stdin: Data? = nil, environment: [String: String]? = nil) throws -> ProcessResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = arguments
    if let environment { process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
    let out = Pipe()
    let err = Pipe()
    process.standardOutput = out
    process.standardError = err
    let input = Pipe()
    process.standardInput = input
    try process.run()
    if let stdin { input.fileHandleForWriting.write(stdin) }
    try input.fileHandleForWriting.close()
    // Read both pipes concurrently so a chatty child cannot block on a full pipe.
    let errData = Mutex(Data())
    let errThread = Thread { errData.withLock { $0 = err.fileHandleForReading.readDataToEndOfFile() } }
    errThread.start()
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    while !errThread.isFinished { usleep(1000) }
    return ProcessResult(status: process.terminationStatus,
                         stdout: String(decoding: outData, as: UTF8.self),
                         stderr: String(decoding: errData.withLock { $0 }, as: UTF8.self))
}

/// Runs qemu-img (the test oracle) and fails the test with its stderr when it does not exit 0.
@discardableResult
public func qemuImg(_ arguments: String..., sourceLocation: SourceLocation = #_sourceLocation) throws -> ProcessResult {
    try qemuImg(arguments, sourceLocation: sourceLocation)
}

/// `qemuImg` with the arguments as an array.
@discardableResult
public func qemuImg(_ arguments: [String], sourceLocation: SourceLocation = #_sourceLocation) throws -> ProcessResult {
    let result = try runProcess(["qemu-img"] + arguments)
    #expect(result.status == 0, "qemu-img \(arguments.joined(separator: " ")) failed: \(result.stderr)",
            sourceLocation: sourceLocation)
    if result.status != 0 { throw KDCTError(.io, "qemu-img failed: \(result.stderr)") }
    return result
}

/// Asserts that `body` throws a KDCTError of `kind`; returns it.
@discardableResult
public func expectKDCTError(_ kind: KDCTError.Code, sourceLocation: SourceLocation = #_sourceLocation,
                            _ body: () throws -> Void) -> KDCTError? {
    do {
        try body()
        Issue.record("expected a \(kind.rawValue) error, but it succeeded", sourceLocation: sourceLocation)
    } catch let error as KDCTError {
        #expect(error.code == kind, "expected \(kind.rawValue), got: \(error)", sourceLocation: sourceLocation)
        return error
    } catch {
        Issue.record("expected a KDCTError, got \(error)", sourceLocation: sourceLocation)
    }
    return nil
}

/// Asserts that qemu-img compare finds the two images identical (`-f`/`-F` given when known).
public func expectQemuIdentical(_ a: String, _ b: String, formatA: String? = nil, formatB: String? = nil,
                         sourceLocation: SourceLocation = #_sourceLocation) throws {
    var arguments = ["qemu-img", "compare"]
    if let formatA { arguments += ["-f", formatA] }
    if let formatB { arguments += ["-F", formatB] }
    arguments += [a, b]
    let result = try runProcess(arguments)
    #expect(result.status == 0, "qemu-img compare \(a) \(b): \(result.stdout) \(result.stderr)",
            sourceLocation: sourceLocation)
}

/// Asserts that qemu-img check finds no errors and no leaks in a QCOW2 image.
public func expectQemuCheckClean(_ path: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
    let result = try runProcess(["qemu-img", "check", "-f", "qcow2", path])
    #expect(result.status == 0, "qemu-img check \(path): \(result.stdout) \(result.stderr)", sourceLocation: sourceLocation)
    #expect(!result.stdout.contains("leaked"), "qemu-img check found leaks: \(result.stdout)", sourceLocation: sourceLocation)
}

/// Deterministic guest content for reader and writer tests: pseudo-random data, text, runs of written zeros and
/// holes, at offsets that are deliberately not cluster- or sector-aligned.
public enum TestPattern {
    /// The byte layout: (offset, length, kind) runs; everything else is a hole.
    public static func runs(size: UInt64) -> [(UInt64, Int, Character)] {
        var runs: [(UInt64, Int, Character)] = []
        let candidates: [(UInt64, Int, Character)] = [
            (0, 4096, "r"),                  // random data at the start (boot sector)
            (65_536 - 700, 1_500, "t"),      // text straddling a 64 KiB boundary
            (200_003, 70_001, "r"),          // unaligned random run
            (300_000, 65_536, "z"),          // written zeros
            (1_048_576 + 511, 3_000, "t"),   // just past 1 MiB, odd offset
            (3_145_728 - 100, 300_000, "r"), // straddles a 1 MiB / 2 MiB boundary
        ]
        for run in candidates where run.0 + UInt64(run.1) <= size { runs.append(run) }
        if size > 8 << 20 { runs.append((size - 5_000, 5_000, "r")) }  // the very end of the disk
        return runs
    }

    /// Bytes of one run: a xorshift stream seeded by the offset ("r"), repeated text ("t") or zeros ("z").
    public static func bytes(offset: UInt64, length: Int, kind: Character) -> [UInt8] {
        switch kind {
        case "t":
            let text = Array("The quick brown fox jumps over the lazy dog at offset \(offset). ".utf8)
            return (0..<length).map { text[$0 % text.count] }
        case "z":
            return [UInt8](repeating: 0, count: length)
        default:
            var state = offset &* 0x9E37_79B9_7F4A_7C15 | 1
            return (0..<length).map { _ in
                state ^= state << 13; state ^= state >> 7; state ^= state << 17
                return UInt8(truncatingIfNeeded: state)
            }
        }
    }

    /// Writes a sparse raw image of `size` bytes holding the pattern; returns its path.
    @discardableResult
    public static func writeRaw(to path: String, size: UInt64) throws -> String {
        try Data().write(to: URL(fileURLWithPath: path))
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        try handle.truncate(atOffset: size)
        for (offset, length, kind) in runs(size: size) {
            try handle.seek(toOffset: offset)
            handle.write(Data(bytes(offset: offset, length: length, kind: kind)))
        }
        return path
    }
}

/// The real-world corpus (`../shared/corpus`), unpacked once per test run into a temp directory.
public enum Corpus {
    /// Where the corpus sources live, relative to the package root.
    public static let sourceDirectory: String = {
        return packageRoot.appendingPathComponent("../shared/corpus").standardizedFileURL.path
    }()

    /// One manifest entry.
    public struct Entry: Decodable, Sendable {
        public var file: String
        public var format: String?
        public var virtual_size: UInt64?
        public var sha256: String?
        public var expect: String
        public var producer: String?
        public var notes: String?
    }

    private static let unpacked: Result<(String, [Entry]), Error> = Result {
        let manifestPath = sourceDirectory + "/MANIFEST.json"
        guard FileManager.default.fileExists(atPath: manifestPath) else {
            throw KDCTError(.notFound, "corpus not found at \(sourceDirectory)")
        }
        let entries = try JSONDecoder().decode([Entry].self, from: Data(contentsOf: URL(fileURLWithPath: manifestPath)))
        let target = NSTemporaryDirectory() + "/kdct-corpus-\(getuid())"
        let result = try runProcess(["python3", sourceDirectory + "/unpack", target])
        guard result.status == 0 else { throw KDCTError(.io, "corpus unpack failed: \(result.stderr)") }
        return (target, entries)
    }

    /// The unpacked directory and manifest, or nil after printing plainly that the corpus is absent.
    public static func load() -> (directory: String, entries: [Entry])? {
        switch unpacked {
        case let .success(value): return value
        case let .failure(error):
            print("CORPUS SKIPPED: ../shared/corpus is not available (\(error)); corpus tests did not run")
            return nil
        }
    }
}

/// SHA-256 of a device's guest content, via the library.
public func guestSHA256(_ path: String, format: ImageFormat? = nil) throws -> String {
    try GuestDigest.sha256(of: ImageOpener.open(path, options: OpenOptions(format: format)))
}

/// Converts `source` to `destination` through the library (the CLI is tested separately).
@discardableResult
public func convertImage(_ source: String, to destination: String, format: ImageFormat, compress: Bool = false,
                  compressionType: CompressionType = .deflate, clusterSize: Int = 65536, workers: Int = 2,
                  openOptions: OpenOptions = OpenOptions()) throws -> ConvertResult {
    let device = try ImageOpener.open(source, options: openOptions)
    var options = ConvertOptions(outputFormat: format)
    options.qcow2 = QCOW2Writer.Options(clusterSize: clusterSize, compress: compress, compressionType: compressionType)
    options.pipeline.workers = workers
    return try DiskConverter.convert(device, toFile: destination, options: options)
}

/// The package's root directory (this file is Tests/KDCTTestSupport/TestSupport.swift).
public let packageRoot: URL = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent()

/// The committed fixtures (Fixtures/images) and their expected guest SHA-256 (Fixtures/SHA256SUMS).
public enum Fixtures {
    /// Fixtures/images.
    public static let imageDirectory = packageRoot.appendingPathComponent("Fixtures/images").path

    /// The path of fixture `name`.
    public static func path(_ name: String) -> String { imageDirectory + "/" + name }

    /// (file, expected guest SHA-256) from Fixtures/SHA256SUMS.
    public static let expectedDigests: [(String, String)] = {
        let sums = packageRoot.appendingPathComponent("Fixtures/SHA256SUMS").path
        guard let text = try? String(contentsOfFile: sums, encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { line in
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            return parts.count == 2 ? (String(parts[1]), String(parts[0])) : nil
        }
    }()
}

/// The built `kdct-native` binary, run as a user would.
public enum CLI {
    /// The binary beside the test bundle (swift build puts every product in one directory).
    public static let binary: String = {
        let bundleDirectory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        let candidates = [bundleDirectory.appendingPathComponent("kdct-native").path,
                          packageRoot.appendingPathComponent(".build/debug/kdct-native").path]
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) } ?? candidates[1]
    }()

    /// Runs `kdct-native` with `arguments`.
    @discardableResult
    public static func run(_ arguments: [String], stdin: Data? = nil, environment: [String: String]? = nil) throws -> ProcessResult {
        try runProcess([binary] + arguments, stdin: stdin, environment: environment)
    }
}

/// Converts `image` through the library to RAW and QCOW2 (in `dir`, named after `label` or the image) and checks
/// both against `reference` with `qemu-img compare` (reading it as `referenceFormat`), and the QCOW2 with
/// `qemu-img check`.
public func expectConvertsIdentically(_ image: String, reference: String, referenceFormat: String,
                                      in dir: TemporaryDirectory, label: String? = nil,
                                      options: OpenOptions = OpenOptions(), workers: Int = 2,
                                      sourceLocation: SourceLocation = #_sourceLocation) throws {
    let name = label ?? FilePaths.lastComponent(of: image)
    let raw = dir.file(name + ".out.raw")
    let qcow2 = dir.file(name + ".out.qcow2")
    try convertImage(image, to: raw, format: .raw, workers: workers, openOptions: options)
    try expectQemuIdentical(reference, raw, formatA: referenceFormat, formatB: "raw", sourceLocation: sourceLocation)
    try convertImage(image, to: qcow2, format: .qcow2, workers: workers, openOptions: options)
    try expectQemuIdentical(reference, qcow2, formatA: referenceFormat, formatB: "qcow2", sourceLocation: sourceLocation)
    try expectQemuCheckClean(qcow2, sourceLocation: sourceLocation)
}

/// A thread-safe counter (unique file names inside property checks, calls made from pipeline threads).
public final class Counter: Sendable {
    private let value = Atomic<Int>(0)
    /// A counter at 0.
    public init() {}
    /// Adds one and returns the new value (1 on the first call).
    public func next() -> Int { value.add(1, ordering: .relaxed).newValue }
}
