#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// Whether the data this process reads ahead currently comes from storage rather than from the page cache, and
/// from which disks.
///
/// A conversion's writer starts writeback of its output early so that the final fsync has little left to do. That
/// pays when the source is in the page cache (the disk has nothing else to do), or on another disk than the
/// output's (an NFS share, a USB disk: the two proceed side by side), but on a disk that serves reads and writes
/// one after the other (measured on the benchmark machine: a cold read and a write with fsync at once take as long
/// as the two in turn, Benchmarks/RESULTS.md "Cold cache") early writeback makes the source's reads wait behind it.
/// `LocalFileTarget` asks `readsFromStorageContend(withDisks:)` to choose its writeback interval.
///
/// The samples come from `ReadOnlyFile.prefetch`: before each range is hinted, `mincore` tells how much of it is
/// cached (a read probe would not do: `preadv2(RWF_NOWAIT)` starts the kernel's read-ahead at the probe, which
/// made most later ranges look cached, 16 writeback kicks on a cold conversion against 3 with `mincore`; nor would
/// the reads' own time: the read-ahead exists to make a cold source's reads find their data cached).
/// Each source file keeps a running average of the fraction not cached (each sample weighs 1/8), which counts for
/// `sampleLifetime` after its last sample; with no read-ahead there are no samples and the writer keeps its
/// cached-source schedule.
package final class SourceCacheMonitor: Sendable {
    /// The process's monitor, fed by every `ReadOnlyFile.prefetch`.
    package static let shared = SourceCacheMonitor()
    /// The average fraction not cached, in 1/1024ths, above which reads count as coming from storage.
    static let storageThreshold: UInt64 = 512
    /// How long, in nanoseconds, a source's average counts after its last sample (a conversion samples every few
    /// megabytes; a finished one stops counting).
    let sampleLifetime: UInt64
    /// Sources remembered at most (a long-running service sees many); older ones are forgotten first.
    static let maximumSources = 64

    private struct Source {
        var averageUncached: UInt64
        var lastSample: UInt64
        /// The disks the source is on (`StorageDisks`); nil when unknown.
        var disks: Set<String>?
    }
    private let sources = Mutex<[FileIdentity: Source]>([:])

    init(sampleLifetime: UInt64 = 2_000_000_000) {
        self.sampleLifetime = sampleLifetime
    }

    /// How many sources are remembered (bounded by `maximumSources`).
    var rememberedSources: Int { sources.withLock { $0.count } }

    /// True when a source sampled in the last `sampleLifetime` had, on average, more than half of what was read
    /// ahead not in the page cache, and may be on one of `disks` (the output's; nil when unknown).
    package func readsFromStorageContend(withDisks disks: Set<String>?) -> Bool {
        let now = Self.monotonicNanoseconds()
        return sources.withLock { sources in
            sources.values.contains { source in
                now &- source.lastSample <= sampleLifetime && source.averageUncached > Self.storageThreshold
                    && StorageDisks.mayShare(source.disks, disks)
            }
        }
    }

    /// Adds a sample for the source `identity`: `uncached` of `total` bytes about to be read ahead were not in the
    /// page cache. `disks` is asked the first time the source is seen.
    func record(uncached: UInt64, of total: UInt64, source identity: FileIdentity, disks: () -> Set<String>?) {
        guard total > 0 else { return }
        let sample = min(uncached, total) * 1024 / total
        let now = Self.monotonicNanoseconds()
        let known = sources.withLock { sources in
            guard var source = sources[identity] else { return false }
            source.averageUncached = (source.averageUncached * 7 + sample) / 8
            source.lastSample = now
            sources[identity] = source
            return true
        }
        if known { return }
        let found = disks()  // sysfs reads, outside the lock
        sources.withLock { sources in
            if sources.count >= Self.maximumSources {
                sources = sources.filter { now &- $0.value.lastSample <= sampleLifetime }
                if sources.count >= Self.maximumSources { sources.removeAll() }
            }
            sources[identity] = Source(averageUncached: sample / 8, lastSample: now, disks: found)
        }
    }

    private static func monotonicNanoseconds() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
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
