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

/// Computes SHA-256 digests of byte ranges of a remote file: on the host over an exec channel when it has
/// `openssl` or `sha256sum` (nothing crosses the network but one line per range, and each line is progress),
/// else by reading the ranges back over SFTP.
struct RemoteHasher {
    let connection: SSHConnection
    let sftp: SFTPSession?
    let preference: VerificationPreference

    /// The digests of `ranges` of `path` (in increasing order, each ending inside the file or at its end) and
    /// how they were computed; `progress` gets the bytes hashed so far; `notes` receives why a fallback was used.
    func digests(of path: String, ranges: [ByteRange], notes: inout [String],
                 progress: (UInt64) -> Void = { _ in }) throws -> ([String], VerificationMethod) {
        if ranges.isEmpty { return ([], preference == .readBack ? .readBack : .remoteCommand) }  // an empty file
        if preference == .automatic {
            let command = Self.command(path: path, ranges: ranges)
            var lines = LineCollector()
            var digests: [String] = []
            var malformed = false
            do {
                var hashed: UInt64 = 0
                let result = try connection.run(command, outputLimit: 4096, longOperation: true) { bytes in
                    for line in lines.add(bytes) {
                        guard let digest = Self.digest(inLine: line[...]), digests.count < ranges.count else {
                            malformed = true
                            continue
                        }
                        hashed += ranges[digests.count].length
                        digests.append(digest)
                        progress(hashed)
                    }
                }
                if result.status == 0 && !malformed && digests.count == ranges.count && lines.pending.isEmpty {
                    return (digests, .remoteCommand)
                }
                let reason = String(decoding: result.errorOutput.prefix(200), as: UTF8.self)
                    .split(separator: "\n").first.map(String.init) ?? "exit status \(result.status), no digest printed"
                notes.append("no SHA-256 tool ran on the host (\(reason)); read the file back instead")
            } catch let error as KDCTError where error.code == .cancelled || !connection.isUsable {
                throw error
            } catch {
                notes.append("the host refused to run a command (\(error)); read the file back instead")
            }
            progress(0)
        }
        guard let sftp else {
            throw KDCTError(.unsupported, "cannot verify: neither openssl nor sha256sum runs on the host and there is no SFTP to read the file back (use --no-verify to skip)",
                            file: "\(connection.endpoint.displayName):\(path)")
        }
        let file = try sftp.openForReading(path)
        defer { file.closeDiscarding() }
        var digests: [String] = []
        var total: UInt64 = 0
        for range in ranges {
            var hasher = SHA256()
            try file.read(from: range.start, length: range.length) { bytes in
                hasher.update(bufferPointer: bytes)
                total += UInt64(bytes.count)
                progress(total)
            }
            digests.append(TextEncoding.hex(hasher.finalize()))
        }
        try file.close()
        return (digests, .readBack)
    }

    /// A POSIX shell command printing one digest line (`HEX  -` or `HEX *stdin`) per range, in order. The hasher
    /// is `openssl dgst -sha256` when the host has it (it uses the CPU's SHA instructions; coreutils'
    /// `sha256sum` ran at a quarter of that speed on the same machine), else `sha256sum`; the choice is made
    /// before any input is read. `p START LENGTH BLOCK` reads a range: with `dd bs=BLOCK skip=.. count=..` (POSIX,
    /// exact on regular files) when BLOCK divides its start and length (or the range ends the file) and the host
    /// has dd, else with `tail -c +N | head -c N`. Runs of equal back-to-back ranges (the chunks) become one loop.
    static func command(path: String, ranges: [ByteRange]) -> String {
        var parts = [
            "if command -v openssl >/dev/null 2>&1; then h() { openssl dgst -sha256 -r; }; else h() { sha256sum; }; fi",
            "if command -v dd >/dev/null 2>&1; then d=1; else d=; fi",
            "f=\(TextEncoding.shellQuoted(path))",
            "p() { if [ -n \"$d\" ] && [ \"$3\" -gt 0 ]; then dd if=\"$f\" bs=$3 skip=$(($1 / $3)) count=$((($2 + $3 - 1) / $3)) 2>/dev/null; else tail -c +$(($1 + 1)) < \"$f\" | head -c $2; fi; }",
        ]
        var index = 0
        while index < ranges.count {
            let range = ranges[index]
            let isLast = index == ranges.count - 1
            // A run of equal, back-to-back ranges (the middle chunks) as one loop.
            var runEnd = index + 1
            while runEnd < ranges.count - 1 && ranges[runEnd].length == range.length
                    && ranges[runEnd].start == ranges[runEnd - 1].end { runEnd += 1 }
            if runEnd - index >= 2 {
                let block = blockSize(dividing: [range.start, range.length]) ?? 0
                parts.append("i=0; while [ $i -lt \(runEnd - index) ]; do p $((\(range.start) + i * \(range.length))) \(range.length) \(block) | h || exit 1; i=$((i + 1)); done")
                index = runEnd
                continue
            }
            // The last range ends at the end of the file, so a rounded-up block count reads exactly to it.
            let block = blockSize(dividing: isLast ? [range.start] : [range.start, range.length]) ?? 0
            parts.append("p \(range.start) \(range.length) \(block) | h || exit 1")
            index += 1
        }
        return parts.joined(separator: "; ")
    }

    /// The largest of 1 MiB, 64 KiB, 4 KiB and 512 that divides every value, or nil.
    static func blockSize(dividing values: [UInt64]) -> UInt64? {
        [UInt64(1 << 20), 65536, 4096, 512].first { block in values.allSatisfy { $0 % block == 0 } }
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

/// Splits a byte stream into lines as it arrives.
struct LineCollector {
    /// Bytes after the last newline.
    private(set) var pending: [UInt8] = []

    /// Adds bytes; returns the lines they completed (without the newline).
    mutating func add(_ bytes: ArraySlice<UInt8>) -> [String] {
        var lines: [String] = []
        for byte in bytes {
            if byte == UInt8(ascii: "\n") {
                lines.append(String(decoding: pending, as: UTF8.self))
                pending.removeAll(keepingCapacity: true)
            } else if pending.count < 4096 {
                pending.append(byte)
            }
        }
        return lines
    }
}
