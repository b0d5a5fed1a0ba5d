/// When an output file starts writeback of what was written to it (`WritableFile.startWriteback`, asynchronous),
/// so that the final `fsync` has little left to do, without making a cold source's reads wait. Used by
/// `LocalFileTarget` when it flushes (with `-t unsafe` there is no final `fsync` to shorten). (`InPlaceTarget`
/// leaves a device's writeback to the kernel and its final `fsync`: the same schedule on a loop device over a
/// file, the device available on the benchmark machine, was no faster cold and slower warm, 1.23 s against
/// 0.94 s, median of 5; Benchmarks/RESULTS.md, "Write scheduling".)
///
/// Writeback starts every `interval` bytes, or every `waitingInterval` bytes while a source comes from storage on
/// a disk the output may share (`SourceCacheMonitor`, `StorageDisks`), where early writes would make its reads
/// wait. Measured against 256 and 512 MiB intervals, no early writeback, and a bound on dirty data
/// (`SYNC_FILE_RANGE_WAIT_BEFORE`): 64 MiB was the fastest with a cached source or one on another disk, 512 MiB and
/// none with a cold one on the same disk (Benchmarks/RESULTS.md, "Write scheduling").
struct WritebackSchedule {
    static let interval: UInt64 = 64 << 20
    static let waitingInterval: UInt64 = 512 << 20
    /// The disks the output is on, to compare with the sources'.
    let outputDisks: Set<String>?
    private let monitor: SourceCacheMonitor
    private var unhintedBytes: UInt64 = 0
    private var lowestUnhinted = UInt64.max
    private var highestWritten: UInt64 = 0

    /// A schedule for the output open as `descriptor`, following the sources `monitor` hears of.
    init(output descriptor: Int32, monitor: SourceCacheMonitor = .shared) {
        outputDisks = StorageDisks.of(descriptor: descriptor)
        self.monitor = monitor
    }

    /// Notes `count` bytes written at `offset`; returns the range whose writeback should start now, if it is time.
    mutating func noteWritten(offset: UInt64, count: UInt64) -> (offset: UInt64, length: UInt64)? {
        lowestUnhinted = min(lowestUnhinted, offset)
        highestWritten = max(highestWritten, offset + count)
        unhintedBytes += count
        guard unhintedBytes >= Self.interval else { return nil }
        guard unhintedBytes >= Self.waitingInterval
            || !monitor.readsFromStorageContend(withDisks: outputDisks) else { return nil }
        defer {
            unhintedBytes = 0
            lowestUnhinted = .max
        }
        return (lowestUnhinted, highestWritten - lowestUnhinted)
    }
}
