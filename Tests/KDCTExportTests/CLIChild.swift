import Foundation
import KDCTFormats
import KDCTTestSupport
import Testing

/// `kdct-native` started as a child process whose standard output is read line by line while it runs, so a
/// test can signal it in a given phase (`--progress json` names the phase on every line) and time its exit.
final class CLIChild: @unchecked Sendable {
    let pid: pid_t
    private let output: Int32
    private let errorFile: String
    private var pending: [UInt8] = []
    private var reaped: Int32?
    /// Every stdout line read so far.
    private(set) var lines: [String] = []

    init(_ arguments: [String], environment: [String: String], directory: TemporaryDirectory) throws {
        var pipeEnds: [Int32] = [0, 0]
        guard pipe(&pipeEnds) == 0 else { throw KDCTError.io("pipe", errno: errno) }
        errorFile = directory.file("child-stderr-\(UUID().uuidString)")
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, pipeEnds[1], 1)
        posix_spawn_file_actions_addopen(&actions, 2, errorFile, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_addclose(&actions, pipeEnds[0])
        let child: pid_t
        do {
            child = try SpawnedProcess.spawn([CLI.binary] + arguments, actions: &actions,
                                             environment: ProcessInfo.processInfo.environment.merging(environment) { $1 })
        } catch {
            close(pipeEnds[0])
            close(pipeEnds[1])
            throw error
        }
        close(pipeEnds[1])
        pid = child
        output = pipeEnds[0]
    }

    deinit {
        if reaped == nil {
            kill(pid, SIGKILL)
            var status: Int32 = 0
            waitpid(pid, &status, 0)
        }
        close(output)
        unlink(errorFile)
    }

    /// The next stdout line, or nil when none arrives within `timeout` seconds or the output ended.
    func nextLine(timeout: Double) -> String? {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            if let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                let line = String(decoding: pending[..<newline], as: UTF8.self)
                pending.removeSubrange(...newline)
                lines.append(line)
                return line
            }
            let left = deadline.timeIntervalSinceNow
            guard left > 0 else { return nil }
            var descriptor = pollfd(fd: output, events: Int16(POLLIN), revents: 0)
            guard poll(&descriptor, 1, Int32(left * 1000) + 1) > 0 else { continue }
            var buffer = [UInt8](repeating: 0, count: 65536)
            let n = read(output, &buffer, buffer.count)
            if n <= 0 { return nil }
            pending += buffer[0..<n]
        }
    }

    /// Reads lines until one satisfies `match` (returned), or nil after `timeout` seconds.
    func waitForLine(timeout: Double, _ match: (String) -> Bool) -> String? {
        let deadline = Date().addingTimeInterval(timeout)
        while deadline.timeIntervalSinceNow > 0 {
            guard let line = nextLine(timeout: deadline.timeIntervalSinceNow) else { return nil }
            if match(line) { return line }
        }
        return nil
    }

    /// Sends `signal` to the child.
    func send(_ signal: Int32) { kill(pid, signal) }

    /// Waits up to `timeout` seconds for the child to end; its exit status (128 + the signal when a signal
    /// killed it), or nil when it is still running.
    func wait(timeout: Double) -> Int32? {
        if let reaped { return reaped }
        let deadline = Date().addingTimeInterval(timeout)
        repeat {
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid {
                let code = status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
                reaped = code
                // Keep what it printed before it ended.
                while nextLine(timeout: 0.01) != nil {}
                return code
            }
            usleep(5_000)
        } while deadline.timeIntervalSinceNow > 0
        return nil
    }

    /// What the child wrote on stderr.
    var errorOutput: String { (try? String(contentsOfFile: errorFile, encoding: .utf8)) ?? "" }
}

/// A progress line's phase (`"phase":"uploading"`), or nil.
func phase(of line: String) -> String? {
    guard let range = line.range(of: "\"phase\":\"") else { return nil }
    return String(line[range.upperBound...].prefix { $0 != "\"" })
}

/// A JSON number field of a line (`"processed":123`), or nil (also for null).
func number(_ key: String, in line: String) -> Double? {
    guard let range = line.range(of: "\"\(key)\":") else { return nil }
    return Double(String(line[range.upperBound...].prefix { "0123456789.-e".contains($0) }))
}

extension TestSSHServer {
    /// Stops (SIGSTOP) or continues (SIGCONT) every process this sshd started: the per-connection sshd
    /// processes and their sftp-servers, as a host that hangs mid-transfer would. The listener keeps running.
    func pauseSessions(_ paused: Bool) {
        for pid in Self.descendants(of: listenerPID) { kill(pid, paused ? SIGSTOP : SIGCONT) }
    }

    /// Stops or continues the listener itself (new connections then hang before the SSH banner).
    func pauseListener(_ paused: Bool) { kill(listenerPID, paused ? SIGSTOP : SIGCONT) }

    /// The files in the writable directory, dot files included, sorted.
    func remoteFiles() -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: remoteDirectory)) ?? []).sorted()
    }
}
