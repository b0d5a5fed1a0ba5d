#if canImport(Glibc)
import Glibc
#endif

/// Unbuffered writes to stdout/stderr (the C `FILE` globals are not concurrency-safe in Swift 6).
enum Console {
    /// Writes `text` to stderr.
    static func error(_ text: String) { writeAll(STDERR_FILENO, text) }

    /// Writes `text` to stdout, after flushing Swift's buffered `print` output so lines stay in order.
    static func out(_ text: String) { writeAll(STDOUT_FILENO, text) }

    /// Ends the process with `code`.
    static func exit(_ code: Int32) -> Never { Glibc.exit(code) }

    private static func writeAll(_ fd: Int32, _ text: String) {
        var bytes = Array(text.utf8)
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeMutableBytes { Glibc.write(fd, $0.baseAddress! + done, $0.count - done) }
            if n < 0 { if errno == EINTR { continue } else { return } }
            done += n
        }
    }
}
