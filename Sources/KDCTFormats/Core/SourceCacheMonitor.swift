#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// Whether the data this process reads ahead currently comes from storage rather than from the page cache.
///
/// A conversion's writer starts writeback of its output early so that the final fsync has little left to do. That
/// pays when the source is in the page cache (the disk has nothing else to do), but on a disk that serves reads and
/// writes one after the other (measured on the benchmark machine: a cold read and a write with fsync at once take
/// as long as the two in turn, Benchmarks/RESULTS.md "Cold cache") early writeback makes the source's reads wait
/// behind it. `LocalFileTarget` asks the shared monitor's `readsComeFromStorage` to choose its writeback interval.
///
/// The samples come from `ReadOnlyFile.prefetch`: before each range is hinted, `mincore` tells how much of it is
/// cached (a read probe would not do: `preadv2(RWF_NOWAIT)` starts the kernel's read-ahead at the probe, which
/// made most later ranges look cached, 16 writeback kicks on a cold conversion against 3 with `mincore`; nor would
/// the reads' own time: the read-ahead exists to make a cold source's reads find their data cached).
/// The fraction not cached joins a running average (each sample weighs 1/8), so with no read-ahead there are no
/// samples and the writer keeps its cached-source schedule.
package final class SourceCacheMonitor: Sendable {
    /// The process's monitor, fed by every `ReadOnlyFile.prefetch`.
    package static let shared = SourceCacheMonitor()
    /// The average fraction not cached, in 1/1024ths, above which reads count as coming from storage.
    static let storageThreshold: UInt64 = 512
    private let averageUncached = Atomic<UInt64>(0)

    init() {}

    /// True when, on average, more than half of what was recently read ahead was not in the page cache.
    package var readsComeFromStorage: Bool {
        averageUncached.load(ordering: .relaxed) > Self.storageThreshold
    }

    /// Adds a sample: `uncached` of `total` bytes about to be read ahead were not in the page cache.
    func record(uncached: UInt64, of total: UInt64) {
        guard total > 0 else { return }
        let sample = min(uncached, total) * 1024 / total
        // A lost update between racing threads only drops one sample from the average.
        let old = averageUncached.load(ordering: .relaxed)
        averageUncached.store((old * 7 + sample) / 8, ordering: .relaxed)
    }

    /// The bytes of `[offset, offset + length)` of the open file `descriptor` that are not in the page cache
    /// (`mincore` over a temporary read-only mapping, which reads nothing), or nil when it cannot tell.
    static func uncachedBytes(descriptor: Int32, offset: UInt64, length: UInt64) -> UInt64? {
        let page = UInt64(sysconf(Int32(_SC_PAGESIZE)))
        guard page > 0, length > 0 else { return nil }
        let start = offset / page * page
        let span = offset + length - start
        let pages = Int((span + page - 1) / page)
        guard let mapping = mmap(nil, Int(span), PROT_READ, MAP_SHARED, descriptor, off_t(start)), mapping != MAP_FAILED else { return nil }
        defer { munmap(mapping, Int(span)) }
        var resident = [UInt8](repeating: 0, count: pages)
        guard mincore(mapping, Int(span), &resident) == 0 else { return nil }
        let uncachedPages = resident.reduce(UInt64(0)) { $0 + UInt64(~$1 & 1) }
        return min(uncachedPages * page, length)
    }
}
