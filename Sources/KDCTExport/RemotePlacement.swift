import KDCTFormats

/// How a verified upload got its final name.
public enum PlacementMethod: String, Sendable {
    /// SSH_FXP_RENAME, which OpenSSH implements with link(2): never replaces a file that appeared meanwhile.
    case renamedWithoutReplacing = "renamed (never replacing)"
    /// `posix-rename@openssh.com`: rename(2) on the host, replacing the old file atomically.
    case atomicReplace = "replaced atomically (posix-rename@openssh.com)"
    /// `mv -f` over an exec channel: rename(2) on the host, replacing the old file atomically.
    case atomicReplaceByCommand = "replaced atomically (mv -f on the host)"
    /// The old file was removed, then the new one renamed: for a moment no file had the name.
    case removeThenRename = "old file removed, then renamed (not atomic)"
}

/// Gives a verified temporary file its final name on the host.
enum RemotePlacement {
    /// Renames `temporary` to `path`. Without `overwrite`, a plain SFTP rename, which fails rather than replace a
    /// file that appeared during the upload. With `overwrite`, an atomic replace, so the name always refers to
    /// the old or the new file: OpenSSH's `posix-rename@openssh.com`, else `mv -f` over an exec channel; only
    /// when the server offers neither (an SFTP-only account whose server refuses the extension) is the old
    /// file removed first, and `notes` says so.
    static func place(_ temporary: String, at path: String, overwrite: Bool, sftp: SFTPSession,
                      notes: inout [String]) throws -> PlacementMethod {
        guard overwrite else {
            do {
                try sftp.rename(temporary, to: path)
                return .renamedWithoutReplacing
            } catch let error as KDCTError where error.code != .cancelled && sftp.connection.isUsable {
                if (try? sftp.status(of: path, followLinks: false)) ?? nil != nil {
                    throw KDCTError(.alreadyExists, "appeared on the host during the upload; the verified upload is kept as \(temporary)",
                                    file: sftp.remoteName(path))
                }
                throw error
            }
        }
        var refusal = "the server does not offer posix-rename@openssh.com"
        if sftp.supportsAtomicReplace {
            do {
                try sftp.renameReplacing(temporary, to: path)
                return .atomicReplace
            } catch let error as KDCTError where error.code == .unsupported || error.message.contains("permission denied") {
                // A server configured to refuse the request (sftp-server -P); a real permission problem makes
                // the next steps fail the same way without touching the old file.
                refusal = "the server refused posix-rename@openssh.com (\(error.message))"
            }
        }
        let marker = "kdct-renamed"
        let command = "mv -f -- \(TextEncoding.shellQuoted(temporary)) \(TextEncoding.shellQuoted(path)) && echo \(marker)"
        let moved = try? sftp.connection.run(command, outputLimit: 4096)
        if let moved, moved.status == 0, String(decoding: moved.output, as: UTF8.self).contains(marker) {
            notes.append("\(refusal): replaced the old file with mv -f on the host (atomic)")
            return .atomicReplaceByCommand
        }
        try sftp.connection.driver.requireUsable("renaming the upload into place")
        let why = moved.map { String(decoding: $0.errorOutput.prefix(200), as: UTF8.self) }
            .flatMap { $0.isEmpty ? nil : $0 } ?? "no shell command runs for this account"
        if (try sftp.status(of: path, followLinks: false)) != nil { try sftp.remove(path) }
        try sftp.rename(temporary, to: path)
        notes.append("\(refusal) and mv -f did not run (\(why.split(separator: "\n").first.map(String.init) ?? why)): the old file was removed before the rename, so for a moment no file had the name")
        return .removeThenRename
    }
}
