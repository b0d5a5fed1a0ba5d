import Foundation
import Synchronization
import Testing
@testable import KDCTFormats
import KDCTTestSupport

/// The read-ahead stage (`PipelineOptions.readAhead`, `BlockDevice.prefetch`): output never depends on it, the
/// hints stay inside the disk and the host files, and the depth is validated.
@Suite struct ReadAheadTests {
    /// Every input format (and a chain, and compressed clusters) made by qemu-img from one raw pattern.
    static let inputs: [(name: String, format: String, options: [String])] = [
        ("qcow2", "qcow2", []),
        ("qcow2-deflate", "qcow2", ["-c"]),
        ("qcow2-zstd", "qcow2", ["-c", "-o", "compression_type=zstd"]),
        ("vmdk", "vmdk", ["-o", "subformat=monolithicSparse"]),
        ("vmdk-stream", "vmdk", ["-o", "subformat=streamOptimized"]),
        ("vhd", "vpc", ["-o", "subformat=dynamic"]),
        ("vhdx", "vhdx", []),
        ("vdi", "vdi", []),
        ("qcow", "qcow", []),
        ("qed", "qed", []),
    ]

    /// The raw pattern and every input made from it (a chain too: a qcow2 overlay over the qcow2 input, with
    /// one range rewritten).
    static func makeInputs(in dir: TemporaryDirectory) throws -> (source: String, images: [(name: String, path: String, reference: String)]) {
        let source = try TestPattern.writeRaw(to: dir.file("src.raw"), size: 11 << 20 + 7 * 65536)
        var images: [(name: String, path: String, reference: String)] = [("raw", source, source)]
        for input in inputs {
            let path = dir.file("in-\(input.name).img")
            try qemuImg(["convert", "-q", "-f", "raw", "-O", input.format] + input.options + [source, path])
            images.append((input.name, path, source))
        }
        // A chain: top.qcow2 over in-qcow2.img, with 1 MiB at 3 MiB rewritten; the reference is its flattening.
        let top = dir.file("top.qcow2")
        try qemuImg("create", "-q", "-f", "qcow2", "-b", "in-qcow2.img", "-F", "qcow2", top)
        let write = try runProcess(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 3M 1M", top])
        #expect(write.status == 0, "qemu-io: \(write.stderr)")
        let flat = dir.file("chain-flat.raw")
        try qemuImg("convert", "-q", "-f", "qcow2", "-O", "raw", top, flat)
        images.append(("chain", top, flat))
        return (source, images)
    }

    @Test func outputIsIdenticalForEveryReadAheadAndWorkerCount() throws {
        let dir = try TemporaryDirectory("kdct-readahead")
        let (_, images) = try Self.makeInputs(in: dir)
        for image in images {
            for format in [ImageFormat.raw, .qcow2] {
                var first: Data?
                for (readAhead, workers) in [(0, 1), (1, 2), (16, 1), (16, 2), (256, 2)] {
                    let output = dir.file("out-\(image.name)-\(readAhead)-\(workers).\(format)")
                    let device = try ImageOpener.open(image.path)
                    var options = ConvertOptions(outputFormat: format)
                    options.pipeline.workers = workers
                    options.pipeline.readAhead = readAhead
                    // Small segments, so the window spans many of them.
                    options.pipeline.segmentSize = 256 << 10
                    try DiskConverter.convert(device, toFile: output, options: options)
                    let bytes = try Data(contentsOf: URL(fileURLWithPath: output))
                    if let first {
                        #expect(bytes == first, "\(image.name) -> \(format): read-ahead \(readAhead), -m \(workers) differs")
                    } else {
                        first = bytes
                        try expectQemuIdentical(image.reference, output, formatA: "raw", formatB: format.rawValue)
                        if format == .qcow2 { try expectQemuCheckClean(output) }
                    }
                }
            }
        }
    }

    @Test func checksumWithReadAheadEqualsSha256sum() throws {
        let dir = try TemporaryDirectory("kdct-readahead-sum")
        let (_, images) = try Self.makeInputs(in: dir)
        for image in images {
            let flat = dir.file("flat-\(image.name).raw")
            try qemuImg("convert", "-q", "-O", "raw", image.path, flat)
            let sum = try runProcess(["sha256sum", flat])
            let expected = String(sum.stdout.prefix(64))
            #expect(expected.count == 64)
            for readAhead in [0, 1, 16, 256] {
                let device = try ImageOpener.open(image.path)
                let progress = Mutex<UInt64>(0)
                let digest = try GuestDigest.sha256(of: device, readAhead: readAhead) { done in
                    progress.withLock { $0 = done }
                }
                #expect(digest == expected, "\(image.name), read-ahead \(readAhead)")
                #expect(progress.withLock { $0 } == device.virtualSize)
            }
        }
    }

    /// The writeback schedule's signal: read-ahead samples mostly not cached mean the source comes from storage;
    /// the average follows the samples back when they are cached again.
    @Test func sourceCacheMonitorFollowsTheSamples() {
        let monitor = SourceCacheMonitor()
        let source = FileIdentity(device: 1, inode: 1)
        let vda: Set<String> = ["vda"]
        #expect(!monitor.readsFromStorageContend(withDisks: vda))
        for _ in 0..<8 { monitor.record(uncached: 0, of: 1 << 20, source: source) { vda } }
        #expect(!monitor.readsFromStorageContend(withDisks: vda))
        for _ in 0..<16 { monitor.record(uncached: 1 << 20, of: 1 << 20, source: source) { vda } }
        #expect(monitor.readsFromStorageContend(withDisks: vda), "nothing was cached")
        #expect(monitor.readsFromStorageContend(withDisks: nil), "the output's disks are unknown: may share")
        #expect(monitor.readsFromStorageContend(withDisks: ["sda", "vda"]))
        #expect(!monitor.readsFromStorageContend(withDisks: ["sdb"]), "the output is on another disk")
        #expect(!monitor.readsFromStorageContend(withDisks: []), "the output is on no disk (tmpfs)")
        for _ in 0..<16 { monitor.record(uncached: 64 << 10, of: 1 << 20, source: source) { vda } }
        #expect(!monitor.readsFromStorageContend(withDisks: vda), "cached again")
        // A source whose disks are unknown (btrfs, FUSE) may share any disk.
        let unknown = FileIdentity(device: 2, inode: 7)
        for _ in 0..<16 { monitor.record(uncached: 1 << 20, of: 1 << 20, source: unknown) { nil } }
        #expect(monitor.readsFromStorageContend(withDisks: ["sdb"]))
    }

    /// A source stops counting when its samples stop (a finished conversion), and a long-running process
    /// remembers a bounded number of sources.
    @Test func sourceCacheMonitorForgets() {
        let monitor = SourceCacheMonitor(sampleLifetime: 50_000_000)
        let source = FileIdentity(device: 1, inode: 1)
        for _ in 0..<16 { monitor.record(uncached: 1 << 20, of: 1 << 20, source: source) { ["vda"] } }
        #expect(monitor.readsFromStorageContend(withDisks: ["vda"]))
        usleep(120_000)
        #expect(!monitor.readsFromStorageContend(withDisks: ["vda"]), "the samples stopped 120 ms ago")
        var asked = 0
        for inode in 0..<UInt64(1000) {
            monitor.record(uncached: 0, of: 1, source: FileIdentity(device: 9, inode: inode)) { asked += 1; return [] }
        }
        #expect(monitor.rememberedSources <= SourceCacheMonitor.maximumSources)
        #expect(asked == 1000, "the disks are asked once per new source")
        monitor.record(uncached: 0, of: 1, source: FileIdentity(device: 9, inode: 999)) { asked += 1; return [] }
        #expect(asked == 1000, "a known source is not asked again")
    }

    /// `mincore` through a temporary read-only mapping: a file just written is cached; after fsync and
    /// `posix_fadvise(DONTNEED)` it is not.
    @Test func uncachedBytesSeesThePageCache() throws {
        let dir = try TemporaryDirectory("kdct-cache")
        let path = dir.file("data.bin")
        try writeRandomFile(path, size: 4 << 20, seed: 3)
        let fd = open(path, O_RDONLY)
        #expect(fd >= 0)
        defer { close(fd) }
        let cached = try #require(SourceCacheMonitor.uncachedBytes(descriptor: fd, offset: 4096, length: 3 << 20))
        #expect(cached == 0, "just written, \(cached) bytes not cached")
        fsync(fd)
        #expect(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) == 0)
        let evicted = try #require(SourceCacheMonitor.uncachedBytes(descriptor: fd, offset: 4096, length: 3 << 20))
        #expect(evicted >= 2 << 20, "evicted (\(dir.path) must not be on tmpfs, which keeps its pages), yet only \(evicted) bytes not cached")
    }

    @Test func readAheadDepthIsValidated() throws {
        let dir = try TemporaryDirectory("kdct-readahead-flag")
        let source = try TestPattern.writeRaw(to: dir.file("src.raw"), size: 2 << 20)
        for depth in [-1, PipelineOptions.maxReadAhead + 1, Int.max] {
            var options = ConvertOptions(outputFormat: .raw)
            options.pipeline.readAhead = depth
            let output = dir.file("bad-\(depth).raw")
            expectKDCTError(.invalidArgument) {
                try DiskConverter.convert(try ImageOpener.open(source), toFile: output, options: options)
            }
            #expect(!FileManager.default.fileExists(atPath: output), "an output appeared for read-ahead \(depth)")
            expectKDCTError(.invalidArgument) {
                _ = try GuestDigest.sha256(of: try ImageOpener.open(source), readAhead: depth, progress: nil)
            }
        }
        #expect(PipelineOptions.maxReadAhead == 256)
        #expect((8...16).contains(PipelineOptions.defaultReadAhead))
        #expect(PipelineOptions().readAhead == PipelineOptions.defaultReadAhead)
        for depth in [0, PipelineOptions.maxReadAhead] {
            var options = ConvertOptions(outputFormat: .raw)
            options.pipeline.readAhead = depth
            let output = dir.file("good-\(depth).raw")
            try DiskConverter.convert(try ImageOpener.open(source), toFile: output, options: options)
            try expectQemuIdentical(source, output, formatA: "raw", formatB: "raw")
        }
    }

    @Test func filePrefetchStaysInsideTheFileAndWindow() throws {
        let dir = try TemporaryDirectory("kdct-prefetch-file")
        let path = dir.file("f.bin")
        let size = 3 << 20 + 5
        try Data(repeating: 1, count: size).write(to: URL(fileURLWithPath: path))
        let file = try ReadOnlyFile(path: path)
        let whole = file.prefetchPieces(offset: 0, length: .max)
        #expect(whole.reduce(0) { $0 + $1.length } == UInt64(size))
        #expect(whole.allSatisfy { $0.length > 0 && $0.length <= ReadOnlyFile.prefetchPiece })
        #expect(whole.last.map { $0.offset + $0.length } == UInt64(size))
        #expect(file.prefetchPieces(offset: UInt64(size), length: 1).isEmpty)
        #expect(file.prefetchPieces(offset: .max, length: .max).isEmpty)
        #expect(file.prefetchPieces(offset: 10, length: 0).isEmpty)
        #expect(file.prefetchPieces(offset: UInt64(size) - 1, length: .max).map(\.length) == [1])
        file.prefetch(offset: .max, length: .max)  // a hint at the end of the offset space: nothing, no trap

        // A window: absolute offsets, never outside [4096, 4096 + 1 MiB + 3).
        let window = try ReadOnlyFile(path: path, window: FileWindow(offset: 4096, length: 1 << 20 + 3, name: "member"))
        for (offset, length) in [(UInt64(0), UInt64.max), (100, 1 << 21), (1 << 20, 100), (1 << 20 + 3, 1)] {
            for piece in window.prefetchPieces(offset: offset, length: length) {
                #expect(piece.offset >= 4096 + offset)
                #expect(piece.offset + piece.length <= 4096 + 1 << 20 + 3)
            }
        }
        #expect(window.prefetchPieces(offset: 0, length: .max).reduce(0) { $0 + $1.length } == 1 << 20 + 3)
    }

    @Test func devicePrefetchHintsOnlyMappedHostRanges() throws {
        let file = SpyHostFile(size: 20 << 20)
        let device = SpyDevice(file: file)
        device.prefetch(at: 0, length: .max)
        let calls = file.calls.withLock { $0 }
        // Guest [0, 4M) at host 1M, [4M, 6M) zero, [6M, 10M) at host 12M: two hints, exactly those ranges.
        #expect(calls.map { [$0.offset, $0.length] } == [[1 << 20, 4 << 20], [12 << 20, 4 << 20]])

        file.calls.withLock { $0 = [] }
        device.prefetch(at: device.virtualSize, length: 1)
        device.prefetch(at: .max, length: .max)
        device.prefetch(at: 5 << 20, length: 1 << 20)  // only zeros
        #expect(file.calls.withLock { $0 }.isEmpty)
        device.prefetch(at: device.virtualSize - 1, length: .max)
        #expect(file.calls.withLock { $0 }.map { [$0.offset, $0.length] } == [[(16 << 20) - 1, 1]])

        // A real image: hints at and past the end are harmless, and reads afterwards are unchanged.
        let dir = try TemporaryDirectory("kdct-prefetch-device")
        let source = try TestPattern.writeRaw(to: dir.file("src.raw"), size: 4 << 20)
        let qcow2 = dir.file("src.qcow2")
        try qemuImg("convert", "-q", "-f", "raw", "-O", "qcow2", source, qcow2)
        let image = try ImageOpener.open(qcow2)
        for (offset, length) in [(UInt64(0), UInt64.max), (image.virtualSize - 1, .max), (image.virtualSize, 1), (.max, .max)] {
            image.prefetch(at: offset, length: length)
        }
        #expect(try image.readBytes(at: 0, count: 4 << 20) == (try ImageOpener.open(source).readBytes(at: 0, count: 4 << 20)))
    }
}

/// A host file that records prefetch hints (and reads nothing).
private final class SpyHostFile: HostFile {
    let path = "spy.img"
    let size: UInt64
    let calls = Mutex<[(offset: UInt64, length: UInt64)]>([])

    init(size: UInt64) { self.size = size }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64, what: @autoclosure () -> String) throws {
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
    }

    func readAvailable(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
        return buffer.count
    }

    func prefetch(offset: UInt64, length: UInt64) { calls.withLock { $0.append((offset, length)) } }
}

/// A 10 MiB device: guest [0, 4M) at host 1M, [4M, 6M) zero, [6M, 10M) at host 12M, mapped one 64 KiB cluster at
/// a time (so the hints must join them).
private final class SpyDevice: MappedDevice {
    let file: SpyHostFile
    let hostFileNames: HostFileNames
    let virtualSize: UInt64 = 10 << 20

    init(file: SpyHostFile) {
        self.file = file
        hostFileNames = HostFileNames(file)
    }

    var info: ImageInfo { ImageInfo(format: .raw, filename: file.path, virtualSize: virtualSize) }

    func mapping(at offset: UInt64, upTo end: UInt64) throws -> MappedRun {
        let length = min(65536 - offset % 65536, end - offset)
        switch offset {
        case ..<(4 << 20): return .data(length, file, (1 << 20) + offset)
        case ..<(6 << 20): return .zero(length)
        default: return .data(length, file, (12 << 20) + offset - (6 << 20))
        }
    }
}
