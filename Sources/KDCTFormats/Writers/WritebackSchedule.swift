/// When an output file starts writeback of what was written to it (`WritableFile.startWriteback`, asynchronous),
/// so that the final `fsync` has little left to do, without making a cold source's reads wait. Used by
/// `LocalFileTarget` when it flushes (with `-t unsafe` there is no final `fsync` to shorten). (`InPlaceTarget`
/// leaves a device's writeback to the kernel and its final `fsync`: the same schedule on a loop device over a
/// file, the device available on the benchmark machine, was no faster cold and slower warm, 1.23 s against
/// 0.94 s, median of 5; Benchmarks/RESULTS.md, "Write scheduling".)
///
/// Writeback starts every `interval` bytes, except while a source comes from storage on a disk the output may share
/// (`SourceCacheMonitor`, `StorageDisks`): a disk that serves reads and writes in turn would make the source's reads
/// wait for the output's writes, so those writes are left to the kernel's own dirty limits and the final `fsync`,
/// as qemu-img leaves all of its writes. The first range started once the source is cached or its reads have
/// ended covers everything written meanwhile. Measured (Benchmarks/RESULTS.md, "Write scheduling"): 64 MiB against
/// 256 and 512 MiB intervals, no early writeback, and a bound on dirty data (`SYNC_FILE_RANGE_WAIT_BEFORE`); 64 MiB
/// was the fastest with a cached source or one on another disk; with a cold one on the same disk, no early
/// writeback was faster than every 512 MiB in each case (qcow2, vdi, vhd, qed -> qcow2, qcow2 -> raw: 1.87-2.09 s
/// against 2.16-2.54 s, medians of 7).
struct WritebackSchedule {
    static let interval: UInt64 = 64 << 20
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
        guard unhintedBytes >= Self.interval, !monitor.readsFromStorageContend(withDisks: outputDisks) else { return nil }
        defer {
            unhintedBytes = 0
            lowestUnhinted = .max
        }
        return (lowestUnhinted, highestWritten - lowestUnhinted)
    }
}
