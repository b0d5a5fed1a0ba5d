import Synchronization

/// What a check finds while it walks an image's metadata: counts, statistics and one line per problem.
///
/// A check opens the image with the format's own reader; the problems the reader finds in its tables while opening
/// (a block map entry past the end of the file, two BAT entries placing blocks on top of each other) are recorded
/// here instead of ending the open (`OpenContext.report`), so one check lists them all. Then the reader walks its
/// decoded tables (`CheckableImage.check(into:)`) and records the rest.
final class CheckLog: Sendable {
    private let state: Mutex<ImageCheckReport>

    /// A log for the image `filename` of `format`.
    init(filename: String, format: ImageFormat) {
        state = Mutex(ImageCheckReport(filename: filename, format: format))
    }

    /// The report so far.
    var report: ImageCheckReport { state.withLock { $0 } }

    private func message(_ line: String, _ report: inout ImageCheckReport) {
        if report.messages.count < ImageChecker.maxMessages { report.messages.append(line) }
    }

    /// A corruption, printed as qemu-img prints one: `ERROR message`.
    func corrupt(_ text: String) {
        state.withLock { report in
            report.corruptions += 1
            message("ERROR \(text)", &report)
        }
    }

    /// A problem a reader reports as an error (a table entry past the end of the file, overlapping blocks): a
    /// corruption, described by the error's message and field.
    func corrupt(_ error: KDCTError) {
        var text = error.message
        if let field = error.field, !field.isEmpty, !text.contains(field) { text += " (\(field))" }
        if let guestOffset = error.guestOffset { text += " at guest offset \(guestOffset)" }
        corrupt(text)
    }

    /// A leak (unreferenced space, or a refcount above the references), with its line as qemu-img prints it.
    func leak(_ line: String) {
        state.withLock { report in
            report.leaks += 1
            message(line, &report)
        }
    }

    /// A remark for the report.
    func note(_ text: String) {
        state.withLock { $0.notes.append(text) }
    }

    /// Sets the statistics qemu-img reports for the format.
    func setStatistics(total: UInt64? = nil, allocated: UInt64? = nil, fragmented: UInt64? = nil,
                       compressed: UInt64? = nil, imageEnd: UInt64? = nil) {
        state.withLock { report in
            report.totalClusters = total
            report.allocatedClusters = allocated
            report.fragmentedClusters = fragmented
            report.compressedClusters = compressed
            report.imageEndOffset = imageEnd
        }
    }
}

/// A reader that checks its own metadata for `ImageChecker`, with its decoded tables.
protocol CheckableImage {
    /// Walks this layer's metadata (not its backing file's or parent's) and records what is wrong in `log`;
    /// `limits` bound what the walk keeps in memory. Throws only when the walk cannot go on (a read fails, a limit
    /// is reached): the check cannot complete.
    func check(into log: CheckLog, limits: ImageLimits) throws
}

/// File ranges that metadata places structures at (tables, blocks, grains), checked against each other: a check
/// adds every range it finds, then `reportOverlaps` sorts them and records each range that starts inside an earlier
/// one (two entries naming the same block, a grain written over a grain table).
///
/// A range carries a `label` the caller decodes when it reports (a table or entry number), so a million ranges cost
/// 24 bytes each, not a string each. At most `limit` ranges are kept (`ImageLimits.maxTableBytes / 24` from the
/// checks): a larger map is a limit error rather than unbounded memory.
struct HostRanges {
    private var ranges: [(start: UInt64, end: UInt64, label: UInt64)] = []
    private let limit: Int

    /// An empty set holding at most `limit` ranges.
    init(limit: Int) { self.limit = limit }

    /// Adds `[start, start + length)` with `label`; throws `limitExceeded` past the limit.
    mutating func add(_ start: UInt64, length: UInt64, label: UInt64) throws {
        guard length > 0 else { return }
        if ranges.count >= limit {
            throw KDCTError.limit("structures to check", value: UInt64(ranges.count + 1), limit: UInt64(limit))
        }
        let (end, overflow) = start.addingReportingOverflow(length)
        ranges.append((start, overflow ? .max : end, label))
    }

    /// Records in `log` each range that overlaps an earlier one (by start), naming both with `describe`.
    mutating func reportOverlaps(into log: CheckLog, _ describe: (UInt64) -> String) {
        ranges.sort { ($0.start, $0.end) < ($1.start, $1.end) }
        guard var widest = ranges.first else { return }
        for range in ranges.dropFirst() {
            if range.start < widest.end {
                log.corrupt("\(describe(range.label)) at file offset \(range.start) overlaps \(describe(widest.label)) (file offsets \(widest.start)..<\(widest.end))")
            }
            if range.end > widest.end { widest = range }
        }
    }
}

/// What a file range of a two-level image holds, packed into a `HostRanges` label: the header, the first-level
/// table (L1 table, grain directory), one second-level table or one allocation unit (cluster, grain).
enum TableRangeLabel {
    /// The header; the first-level table.
    case header, directory
    /// Second-level table number N.
    case table(Int)
    /// Allocation unit (guest cluster or grain) number N.
    case unit(UInt64)

    /// The label's packed value.
    var value: UInt64 {
        switch self {
        case .header: return 0
        case .directory: return 1
        case let .table(index): return 1 << 62 | UInt64(index)
        case let .unit(index): return 1 << 63 | index
        }
    }

    /// The label packed into `value`.
    init(value: UInt64) {
        switch value >> 62 {
        case 0: self = value == 0 ? .header : .directory
        case 1: self = .table(Int(value & ((1 << 62) - 1)))
        default: self = .unit(value & ((1 << 63) - 1))
        }
    }

    /// The structure in the format's words (`directory`: "the L1 table"; `table`: "L2 table"; `unit`: "the data of
    /// guest cluster").
    func name(directory: String, table: String, unit: String) -> String {
        switch self {
        case .header: return "the header"
        case .directory: return directory
        case let .table(index): return "\(table) \(index)"
        case let .unit(index): return "\(unit) \(index)"
        }
    }
}
