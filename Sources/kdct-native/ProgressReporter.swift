import KDCTFormats
import CKDCTShims
#if canImport(Glibc)
import Glibc
#endif

/// Draws progress: a bar on stderr when it is a terminal (`-p`), JSON lines on stdout (`--progress json`).
final class ProgressReporter: @unchecked Sendable {
    private let bar: Bool
    private let json: Bool
    private let start = ProgressReporter.now()
    private var lastDraw = 0.0
    private var drewBar = false

    init(bar: Bool, json: Bool) {
        self.bar = bar && isatty(STDERR_FILENO) != 0
        self.json = json
    }

    static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    func report(_ progress: ConvertProgress) {
        let now = Self.now()
        let done = progress.processedBytes >= progress.totalBytes
        guard done || now - lastDraw >= 0.2 else { return }
        lastDraw = now
        let elapsed = max(now - start, 1e-6)
        let rate = Double(progress.processedBytes) / elapsed
        let eta = rate > 0 ? Double(progress.totalBytes - min(progress.totalBytes, progress.processedBytes)) / rate : 0
        if json {
            let line: InfoValue = .object([
                ("processed", .unsigned(progress.processedBytes)),
                ("total", .unsigned(progress.totalBytes)),
                ("data-read", .unsigned(progress.dataBytesRead)),
                ("percent", .string(String(format2: progress.fraction * 100))),
                ("elapsed-seconds", .string(String(format2: elapsed))),
                ("bytes-per-second", .unsigned(UInt64(rate))),
                ("eta-seconds", .string(String(format2: eta))),
            ])
            Console.out(line.jsonText(indent: 0) + "\n")

        }
        if bar {
            let columns = max(40, Int(kdct_terminal_columns(STDERR_FILENO)))
            let text = " \(String(format2: progress.fraction * 100))%  \(ByteCount.human(progress.processedBytes))/\(ByteCount.human(progress.totalBytes))  \(ByteCount.human(UInt64(rate)))/s  ETA \(Int(eta))s"
            let width = max(10, columns - text.count - 3)
            let filled = Int(Double(width) * progress.fraction)
            let line = "[" + String(repeating: "#", count: filled) + String(repeating: " ", count: width - filled) + "]" + text
            Console.error("\r" + line)
            drewBar = true
        }
    }

    func finish() {
        if drewBar { Console.error("\n") }
    }
}
