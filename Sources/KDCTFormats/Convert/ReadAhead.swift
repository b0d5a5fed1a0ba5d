/// A read-ahead stage: one thread walks the ranges a consumer is about to read, in the consumer's own order, and
/// hints each to the device (`BlockDevice.prefetch`: `posix_fadvise(WILLNEED)` on the host ranges), staying at
/// most `budget` bytes ahead of what the consumer has started. So the disk always has up to a window of reads in
/// flight, however few threads consume them: I/O depth is independent of the worker count.
///
/// The stage holds no buffers (the data goes to the page cache, where the consumer's `read` finds it), so memory
/// does not grow with the depth. It only ever hints: the consumer's reads are what produce bytes and errors, so a
/// stage that falls behind, stops early or is absent changes timing, never output.
package final class ReadAheadStage {
    /// What the consumer and the stage's thread share.
    fileprivate struct Progress: Sendable {
        /// Bytes of ranges the consumer has started.
        var started: UInt64 = 0
        /// The consumer is done (or failed): the thread ends at its next wait.
        var stopped = false
    }

    /// The consumer's side, which it (or its threads) call as it starts each range.
    package struct Cursor: Sendable {
        fileprivate let progress: ConditionMutex<Progress>

        /// Notes that the consumer has started the next `length` bytes of the range sequence.
        package func advance(by length: UInt64) { progress.withLock { $0.started += length } }
    }

    /// Largest read-ahead depth a caller may ask for (in ranges of the consumer's unit size).
    package static let maxDepth = 256

    private let progress = ConditionMutex(Progress())
    private var thread: JoinableThread?

    /// The consumer's cursor.
    package var cursor: Cursor { Cursor(progress: progress) }

    /// Starts the thread, reading ahead on `device`. `ranges` yields the consumer's guest ranges `(offset, length)`
    /// in its order, then nil; an error ends the read-ahead quietly (the consumer meets the same error in its own
    /// walk). `budget` is how many bytes past the consumer's start the thread hints.
    convenience init(device: any BlockDevice, budget: UInt64,
                     ranges: sending @escaping () throws -> (offset: UInt64, length: UInt64)?) throws {
        try self.init(budget: budget, ranges: ranges, prefetch: { device.prefetch(at: $0, length: $1) })
    }

    /// Starts the thread: as `init(device:budget:ranges:)`, with `prefetch(offset, length)` as the hint (a file's
    /// `prefetch`, say).
    package init(budget: UInt64, ranges: sending @escaping () throws -> (offset: UInt64, length: UInt64)?,
                 prefetch: @escaping @Sendable (UInt64, UInt64) -> Void) throws {
        let progress = self.progress
        thread = try JoinableThread {
            var issued: UInt64 = 0
            while let range = try? ranges() {
                // Wait until this range starts within the window, or the consumer is done.
                let started = progress.withLock(when: { $0.stopped || issued < $0.started + budget }) { state -> UInt64? in
                    state.stopped ? nil : state.started
                }
                guard let started else { return }
                // A range the consumer has already started is being read: no hint needed.
                if issued + range.length > started { prefetch(range.offset, range.length) }
                issued += range.length
            }
        }
    }

    /// Ends the read-ahead and waits for its thread.
    package func stop() {
        progress.withLock { $0.stopped = true }
        thread?.join()
        thread = nil
    }

    deinit { stop() }

    /// Checks a read-ahead depth option: 0 (off) to `maxDepth`.
    package static func validate(depth: Int, field: String) throws {
        guard (0...maxDepth).contains(depth) else {
            throw KDCTError(.invalidArgument, "read-ahead depth \(depth) is out of range (0 turns it off; at most \(maxDepth))",
                            field: field)
        }
    }
}
