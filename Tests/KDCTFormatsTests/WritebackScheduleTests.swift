import Foundation
import Testing
@testable import KDCTFormats
import KDCTTestSupport

/// `WritebackSchedule`: writeback every 64 MiB, none while a cold source may share the output's disk.
@Suite struct WritebackScheduleTests {
    /// Writes `count` MiB one after the other from `start` and returns the ranges the schedule starts.
    static func kicks(_ schedule: inout WritebackSchedule, mebibytes count: Int, from start: UInt64 = 0) -> [(UInt64, UInt64)] {
        var ranges: [(UInt64, UInt64)] = []
        for index in 0..<UInt64(count) {
            if let range = schedule.noteWritten(offset: start + (index << 20), count: 1 << 20) {
                ranges.append((range.offset, range.length))
            }
        }
        return ranges
    }

    /// A schedule for a new file in a temporary folder, following `monitor`; the file stays open while `body` runs.
    static func withSchedule(_ monitor: SourceCacheMonitor, _ body: (inout WritebackSchedule) throws -> Void) throws {
        let dir = try TemporaryDirectory("kdct-writeback")
        let output = try WritableFile(creatingExclusively: dir.file("out.bin"))
        defer { try? output.close() }
        var schedule = WritebackSchedule(output: output.descriptor, monitor: monitor)
        try #require(schedule.outputDisks != nil, "the disks under \(dir.path) are unknown")
        try body(&schedule)
    }

    /// Samples of one source on `disks`, all of it not cached (`cold`) or all cached.
    static func sampleSource(_ monitor: SourceCacheMonitor, cold: Bool = true, on disks: Set<String>?) {
        for _ in 0..<16 {
            monitor.record(uncached: cold ? 1 << 20 : 0, of: 1 << 20, source: FileIdentity(device: 1, inode: 2)) { disks }
        }
    }

    @Test func everySixtyFourMebibytesWithNoColdSource() throws {
        try Self.withSchedule(SourceCacheMonitor()) { schedule in
            let ranges = Self.kicks(&schedule, mebibytes: 200)
            #expect(ranges.map(\.0) == [0, 64 << 20, 128 << 20])
            #expect(ranges.allSatisfy { $0.1 == 64 << 20 })
        }
    }

    /// No writeback while a cold source shares the disk; once it is cached, one range covers all written meanwhile.
    @Test func waitsWhileAColdSourceSharesTheDisk() throws {
        let monitor = SourceCacheMonitor()
        try Self.withSchedule(monitor) { schedule in
            Self.sampleSource(monitor, on: schedule.outputDisks)
            #expect(Self.kicks(&schedule, mebibytes: 1100).isEmpty)
            Self.sampleSource(monitor, cold: false, on: schedule.outputDisks)
            let ranges = Self.kicks(&schedule, mebibytes: 1, from: 1100 << 20)
            #expect(ranges.map(\.0) == [0] && ranges.map(\.1) == [1101 << 20], "\(ranges)")
        }
    }

    @Test func keepsItsPaceWhenTheColdSourceIsOnAnotherDisk() throws {
        let monitor = SourceCacheMonitor()
        try Self.withSchedule(monitor) { schedule in
            Self.sampleSource(monitor, on: ["kdct-test-no-such-disk"])
            #expect(Self.kicks(&schedule, mebibytes: 130).map(\.0) == [0, 64 << 20])
        }
        // The same source on unknown disks may share the output's: the schedule waits.
        let unknown = SourceCacheMonitor()
        try Self.withSchedule(unknown) { schedule in
            Self.sampleSource(unknown, on: nil)
            #expect(Self.kicks(&schedule, mebibytes: 130).isEmpty)
        }
    }

    /// Writes out of order: each range covers everything written since the last one.
    @Test func theRangeCoversWhatWasWritten() throws {
        try Self.withSchedule(SourceCacheMonitor()) { schedule in
            #expect(schedule.noteWritten(offset: 100 << 20, count: 32 << 20) == nil)
            let started = schedule.noteWritten(offset: 10 << 20, count: 32 << 20)
            let range = try #require(started)
            #expect(range.offset == 10 << 20 && range.length == 122 << 20)
        }
    }

    /// `LocalFileTarget` follows the schedule when it flushes, and starts no writeback when it does not (`-t
    /// unsafe`: early writeback only shortens the final fsync). The flushed target may wait while another test's
    /// cold source is in the shared monitor (a corpus image read in this process), so it is held to the schedule
    /// only when no cold source was there before or after its writes.
    @Test(arguments: [true, false]) func anUnflushedOutputStartsNoWriteback(flush: Bool) throws {
        let dir = try TemporaryDirectory("kdct-writeback-target")
        let coldSourceBefore = SourceCacheMonitor.shared.readsFromStorageContend(withDisks: nil)
        let target = try LocalFileTarget(destination: dir.file("out.bin"), overwrite: false, flush: flush)
        defer { target.abort() }
        let chunk = [UInt8](repeating: 0xA5, count: 1 << 20)
        try chunk.withUnsafeBytes { bytes in
            for index in 0..<UInt64(200) { try target.write(bytes, at: index << 20) }
        }
        let coldSource = coldSourceBefore || SourceCacheMonitor.shared.readsFromStorageContend(withDisks: nil)
        if !flush {
            #expect(target.writebackStarts == 0)
        } else if !coldSource {
            #expect(target.writebackStarts >= 1)
        }
    }
}
