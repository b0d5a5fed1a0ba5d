import KDCTFormats
#if canImport(Glibc)
import Glibc
#endif

/// Where a password or key passphrase comes from. Never the command line (visible to every local user in
/// `ps`), never stored by the exporter.
public enum SecretSource: Sendable, Equatable {
    /// A value the caller already holds (library use, tests).
    case value(String)
    /// The value of an environment variable (`--password-env VAR`, `KDCT_SSH_PASSPHRASE`).
    case environment(String)
    /// The first line of standard input (`--password-stdin`).
    case standardInput
    /// Asked on the controlling terminal with echo off; unavailable when there is no terminal.
    case terminalPrompt

    /// The secret, or nil when this source has none (unset variable, no terminal). `prompt` is shown by
    /// `terminalPrompt`.
    public func resolve(prompt: String) throws -> String? {
        switch self {
        case let .value(text):
            return text
        case let .environment(name):
            guard let raw = getenv(name) else { return nil }
            return String(cString: raw)
        case .standardInput:
            return try Self.readLine(from: STDIN_FILENO, what: "standard input")
        case .terminalPrompt:
            return try TerminalPrompt.readSecret(prompt: prompt)
        }
    }

    /// Describes the source without revealing the secret, for messages.
    public var descriptionForMessages: String {
        switch self {
        case .value: return "the given value"
        case let .environment(name): return "environment variable \(name)"
        case .standardInput: return "standard input"
        case .terminalPrompt: return "a terminal prompt"
        }
    }

    /// Reads bytes up to the first newline (or end of input) from `fd`, without the line end. At most 64 KiB.
    static func readLine(from fd: Int32, what: String) throws -> String? {
        var bytes: [UInt8] = []
        var byte: UInt8 = 0
        while bytes.count < 65536 {
            let n = read(fd, &byte, 1)
            if n < 0 {
                // Only our SIGINT/SIGTERM handlers interrupt a read (they are installed without SA_RESTART).
                if errno == EINTR { throw KDCTError(.cancelled, "interrupted while reading a secret from \(what)") }
                throw KDCTError.io("reading a secret from \(what)", errno: errno)
            }
            if n == 0 { break }
            if byte == UInt8(ascii: "\n") { break }
            bytes.append(byte)
        }
        if bytes.last == UInt8(ascii: "\r") { bytes.removeLast() }
        if bytes.isEmpty { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// Reads a secret on the controlling terminal (`/dev/tty`) with echo switched off, as ssh does.
public enum TerminalPrompt {
    /// Shows `prompt` and reads one line without echo; nil when the process has no controlling terminal.
    public static func readSecret(prompt: String) throws -> String? {
        let fd = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var saved = termios()
        guard tcgetattr(fd, &saved) == 0 else { return nil }
        var silent = saved
        silent.c_lflag &= ~tcflag_t(ECHO | ECHONL)
        silent.c_lflag |= tcflag_t(ICANON)
        _ = prompt.withCString { write(fd, $0, strlen($0)) }
        guard tcsetattr(fd, TCSAFLUSH, &silent) == 0 else { return nil }
        defer {
            _ = tcsetattr(fd, TCSAFLUSH, &saved)
            _ = write(fd, "\n", 1)
        }
        return try SecretSource.readLine(from: fd, what: "the terminal")
    }
}
