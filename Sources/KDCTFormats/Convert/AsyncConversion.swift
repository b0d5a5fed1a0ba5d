import Synchronization

/// The conversion as `async` functions, for Swift concurrency callers.
///
/// The pipeline itself runs on its own threads (it reads and writes with blocking system calls), so awaiting a
/// conversion never occupies a thread of the cooperative pool. Cancelling the awaiting task stops the conversion at
/// the next segment: the call throws ``KDCTError`` with code ``KDCTError/Code/cancelled`` and the destination is left
/// as it was (nothing under its name).
///
/// ```swift
/// let (progress, reporter) = AsyncStream.makeStream(of: ConvertProgress.self, bufferingPolicy: .bufferingNewest(1))
/// async let converted = DiskConverter.convert(disk, toFile: "disk.qcow2",
///                                             options: ConvertOptions(outputFormat: .qcow2), progress: reporter)
/// for await step in progress { print("\(Int(step.fraction * 100))%") }
/// let result = try await converted
/// ```
extension DiskConverter {
    /// Converts `source` to the local file `destination` (written under a temporary name, renamed when complete).
    ///
    /// - Parameters:
    ///   - source: The disk to convert.
    ///   - destination: The output file; its directory must exist.
    ///   - options: Output format and its options, overwriting, workers and segment size.
    ///   - progress: Receives a ``ConvertProgress`` after every segment written (as ``PipelineOptions/progress``
    ///     does, which is still called too) and is finished when the conversion ends, whether it succeeded or not.
    /// - Returns: What the conversion did.
    @discardableResult
    public static func convert(_ source: any BlockDevice, toFile destination: String,
                               options: ConvertOptions = ConvertOptions(),
                               progress: AsyncStream<ConvertProgress>.Continuation? = nil) async throws -> ConvertResult {
        try await runOnOwnThread(options: options, progress: progress) { options in
            try convert(source, toFile: destination, options: options)
        }
    }

    /// Converts `source` onto `target`, committing it on success and aborting it (nothing under the final name) on
    /// any error or cancellation.
    ///
    /// - Parameters:
    ///   - source: The disk to convert.
    ///   - target: Where the output goes (a remote file, for example); it is used on the conversion's own thread.
    ///   - options: Output format and its options, workers and segment size.
    ///   - progress: Receives a ``ConvertProgress`` after every segment written and is finished when the
    ///     conversion ends.
    /// - Returns: What the conversion did.
    @discardableResult
    public static func convert(_ source: any BlockDevice, to target: sending any OutputTarget,
                               options: ConvertOptions = ConvertOptions(),
                               progress: AsyncStream<ConvertProgress>.Continuation? = nil) async throws -> ConvertResult {
        try await runOnOwnThread(options: options, progress: progress) { options in
            try convert(source, to: target, options: options)
        }
    }

    /// Runs the blocking `conversion` on a thread of its own with the calling task's cancellation and `progress`
    /// wired into its options, and resumes the caller when it ends.
    private static func runOnOwnThread(options: ConvertOptions, progress: AsyncStream<ConvertProgress>.Continuation?,
                                       _ conversion: sending @escaping (ConvertOptions) throws -> ConvertResult)
        async throws -> ConvertResult {
        defer { progress?.finish() }
        let cancellation = CancellationFlag()
        var options = options
        let callerCancelled = options.pipeline.isCancelled
        options.pipeline.isCancelled = { cancellation.isSet || callerCancelled?() == true }
        if let progress {
            let callerProgress = options.pipeline.progress
            options.pipeline.progress = { step in
                progress.yield(step)
                callerProgress?(step)
            }
        }
        // The conversion moves to its thread through a hand-off: taken out once, there.
        let pending = HandOff(conversion)
        return try await withTaskCancellationHandler {
            // A task cancelled before it started converts nothing (an image without data would never poll the flag).
            if Task.isCancelled { throw KDCTError(.cancelled, "conversion cancelled") }
            return try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<ConvertResult, any Error>) in
                do {
                    try JoinableThread.detach { [options] in
                        continuation.resume(with: Result {
                            guard let conversion = pending.take() else {
                                throw KDCTError(.invalidArgument, "conversion started twice")
                            }
                            return try conversion(options)
                        })
                    }
                } catch {
                    continuation.resume(throwing: error)
                }
            }
        } onCancel: {
            cancellation.set()
        }
    }
}

/// A flag set once from any thread (a task's cancellation handler) and polled by the pipeline's committing thread.
final class CancellationFlag: Sendable {
    private let flag = Atomic<Bool>(false)

    /// Sets the flag.
    func set() { flag.store(true, ordering: .releasing) }

    /// Whether the flag was set.
    var isSet: Bool { flag.load(ordering: .acquiring) }
}

/// A non-Sendable value moved to another thread: put in once, taken out once.
final class HandOff<Value>: Sendable {
    private let slot: Mutex<Value?>

    /// Holds `value` until `take()`.
    init(_ value: sending Value) { slot = Mutex(value) }

    /// The value, the first time; nil afterwards.
    func take() -> sending Value? { slot.withLock { $0.take() } }
}
