import Foundation
import Synchronization
import Testing
import KDCTFormats
import KDCTTestSupport

/// The async conversion API: same output as the blocking one, progress as an AsyncStream, Task cancellation.
@Suite struct AsyncConversionTests {
    @Test func convertsWithProgressStream() async throws {
        let dir = try TemporaryDirectory()
        let source = try TestPattern.writeRaw(to: dir.file("src.img"), size: 12 << 20 + 4096)
        let device = try ImageOpener.open(source)
        var options = ConvertOptions(outputFormat: .qcow2)
        options.pipeline.segmentSize = 1 << 20
        let (progress, reporter) = AsyncStream.makeStream(of: ConvertProgress.self)
        async let converted = DiskConverter.convert(device, toFile: dir.file("out.qcow2"), options: options,
                                                    progress: reporter)
        var steps: [ConvertProgress] = []
        for await step in progress { steps.append(step) }   // ends: the conversion finishes the stream
        let result = try await converted

        #expect(result.virtualSize == device.virtualSize)
        #expect(steps.count >= 2, "a step per segment and a final one, got \(steps.count)")
        #expect(zip(steps, steps.dropFirst()).allSatisfy { $0.processedBytes <= $1.processedBytes })
        #expect(steps.last?.processedBytes == device.virtualSize && steps.last?.fraction == 1)
        try expectQemuIdentical(source, dir.file("out.qcow2"), formatA: "raw", formatB: "qcow2")
        try expectQemuCheckClean(dir.file("out.qcow2"))
    }

    @Test func cancellingTheTaskStopsTheConversionAndLeavesNothing() async throws {
        let dir = try TemporaryDirectory()
        let source = try TestPattern.writeRaw(to: dir.file("src.img"), size: 16 << 20)
        let device = try ImageOpener.open(source)
        let destination = dir.file("out.raw")
        var options = ConvertOptions(outputFormat: .raw)
        options.pipeline.workers = 1
        options.pipeline.segmentSize = 64 << 10
        // The committing thread waits in its first progress call until the task is cancelled, so the conversion
        // cannot finish first however the threads are scheduled.
        let gate = Gate()
        options.pipeline.progress = { _ in gate.wait() }
        let (progress, reporter) = AsyncStream.makeStream(of: ConvertProgress.self)
        let task = Task { try await DiskConverter.convert(device, toFile: destination, options: options, progress: reporter) }
        var iterator = progress.makeAsyncIterator()
        _ = await iterator.next()
        task.cancel()
        gate.open()
        let outcome = await task.result
        #expect(throws: KDCTError.self) { try outcome.get() }
        if case let .failure(error as KDCTError) = outcome { #expect(error.code == .cancelled, "\(error)") }
        #expect(!FileManager.default.fileExists(atPath: destination))
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0 != "src.img" }
        #expect(leftovers.isEmpty, "temporary files left: \(leftovers)")
    }

    @Test func aTaskCancelledBeforeItStartsConvertsNothing() async throws {
        let dir = try TemporaryDirectory()
        let source = try TestPattern.writeRaw(to: dir.file("src.img"), size: 1 << 20)
        let device = try ImageOpener.open(source)
        let destination = dir.file("out.qcow2")
        let task = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return try await DiskConverter.convert(device, toFile: destination, options: ConvertOptions(outputFormat: .qcow2))
        }
        let outcome = await task.result
        if case let .failure(error as KDCTError) = outcome { #expect(error.code == .cancelled) } else {
            Issue.record("expected a cancelled error, got \(outcome)")
        }
        #expect(!FileManager.default.fileExists(atPath: destination))
    }

    @Test func optionsHaveSensibleDefaults() {
        let options = ConvertOptions(outputFormat: .qcow2)
        #expect(options.outputFormat == .qcow2 && !options.overwrite)
        #expect(options.pipeline.workers >= 1 && options.pipeline.segmentSize > 0)
        #expect(ConvertOptions().outputFormat == .raw)
    }
}

/// Blocks callers of `wait` until `open` (at most 30 s, so a broken test fails instead of hanging).
private final class Gate: Sendable {
    private let isOpen = Atomic<Bool>(false)
    func open() { isOpen.store(true, ordering: .releasing) }
    func wait() {
        let deadline = Date().addingTimeInterval(30)
        while !isOpen.load(ordering: .acquiring) && Date() < deadline { usleep(1000) }
    }
}
