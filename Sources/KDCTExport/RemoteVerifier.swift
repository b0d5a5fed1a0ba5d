import Crypto
import KDCTFormats

/// How a remote file's content was checked.
public enum VerificationMethod: String, Sendable {
    /// The host computed it (`openssl dgst -sha256`, else `sha256sum`) over an exec channel.
    case remoteCommand = "SHA-256 computed on the host"
    /// The file was read back over SFTP (or scp) and hashed here.
    case readBack = "read back and hashed locally"
    /// Not verified (`--no-verify`).
    case skipped = "not verified"
}

/// Which verification to use.
public enum VerificationPreference: String, Sendable, CaseIterable {
    /// `sha256sum` on the host when it works, else read back.
    case automatic
    /// Always read back (for hosts where running commands is not wanted, and for tests of that path).
    case readBack
}

/// Computes SHA-256 digests of byte ranges of a remote file: with `sha256sum` over an exec channel when the host
/// has it (nothing crosses the network but the digest), else by reading the ranges back.
struct RemoteHasher {
    let connection: SSHConnection
    let sftp: SFTPSession?
    let preference: VerificationPreference
    /// Called with bytes hashed while reading back.
    var progress: ((UInt64) -> Void)?

    /// The digests of `ranges` of `path` and how they were computed; `notes` receives why a fallback was used.
    func digests(of path: String, ranges: [(start: UInt64, length: UInt64)], fileSize: UInt64,
                 notes: inout [String]) throws -> ([String], VerificationMethod) {
        if preference == .automatic {
            let command = Self.command(path: path, ranges: ranges, fileSize: fileSize)
            do {
                let result = try connection.run(command, outputLimit: 4096, waitIndefinitely: true)
                let lines = String(decoding: result.output, as: UTF8.self).split(separator: "\n")
                let digests = lines.compactMap { Self.digest(inLine: $0) }
                if result.status == 0 && digests.count == ranges.count && lines.count == ranges.count {
                    return (digests, .remoteCommand)
                }
                let reason = String(decoding: result.errorOutput.prefix(200), as: UTF8.self)
                    .split(separator: "\n").first.map(String.init) ?? "exit status \(result.status), no digest printed"
                notes.append("no SHA-256 tool ran on the host (\(reason)); read the file back instead")
            } catch {
                notes.append("the host refused to run a command (\(error)); read the file back instead")
            }
        }
        guard let sftp else {
            throw KDCTError(.unsupported, "cannot verify: neither openssl nor sha256sum runs on the host and there is no SFTP to read the file back (use --no-verify to skip)",
                            file: "\(connection.endpoint.displayName):\(path)")
        }
        let file = try sftp.openForReading(path)
        defer { file.closeDiscarding() }
        let chunk = 2 << 20
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 4096)
        defer { buffer.deallocate() }
        var digests: [String] = []
        var total: UInt64 = 0
        for range in ranges {
            var hasher = SHA256()
            var offset = range.start
            let end = range.start + range.length
            while offset < end {
                let want = Int(min(UInt64(chunk), end - offset))
                let got = try file.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<want]), at: offset)
                guard got > 0 else {
                    throw KDCTError(.truncated, "the remote file ends at \(offset), before \(end)",
                                    file: "\(connection.endpoint.displayName):\(path)")
                }
                hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: buffer[0..<got]))
                offset += UInt64(got)
                total += UInt64(got)
                progress?(total)
            }
            digests.append(TextEncoding.hex(hasher.finalize()))
        }
        return (digests, .readBack)
    }

    /// One digest line per range (`HEX  -` or `HEX *stdin`): the whole file from stdin, or a range cut with
    /// `tail -c +N` (POSIX) and `head -c N` (GNU, BusyBox and the BSDs). The hasher is `openssl dgst -sha256`
    /// when the host has it (it uses the CPU's SHA instructions; coreutils' `sha256sum` runs at a quarter of that
    /// speed on the same machine), else `sha256sum`. The choice is made before any input is read, so a failing
    /// tool can never leave the other one a partial stream.
    static func command(path: String, ranges: [(start: UInt64, length: UInt64)], fileSize: UInt64) -> String {
        let quoted = TextEncoding.shellQuoted(path)
        let hasher = "if command -v openssl >/dev/null 2>&1; then h() { openssl dgst -sha256 -r; }; else h() { sha256sum; }; fi; "
        return hasher + ranges.map { range -> String in
            if range.start == 0 && range.length == fileSize { return "h < \(quoted)" }
            var text = "tail -c +\(range.start + 1) < \(quoted)"
            if range.start + range.length < fileSize { text += " | head -c \(range.length)" }
            return text + " | h"
        }.joined(separator: " && ")
    }

    /// The hex digest at the start of a `sha256sum` output line, or nil.
    static func digest(inLine line: Substring) -> String? {
        let hex = line.prefix(64)
        guard hex.count == 64, hex.allSatisfy({ $0.isHexDigit && !$0.isUppercase }) else { return nil }
        let rest = line.dropFirst(64)
        guard rest.isEmpty || rest.first == " " else { return nil }
        return String(hex)
    }
}
