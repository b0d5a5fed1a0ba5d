import KDCTFormats

/// Removes a temporary file from the host after a failure. The failed operation's own connection is used when it
/// is still usable; after a cancellation, a timeout or a lost connection it is not (libssh2 may hold half a
/// packet), so a new connection is made with its `reconnectOptions`, within a few seconds and deaf to the
/// cancellation that caused the cleanup.
enum RemoteCleanup {
    /// Seconds a cleanup may take after a cancellation (the whole command must end within 2 s of the signal).
    static let afterCancellation = 1.5
    /// Seconds a cleanup may take after any other failure.
    static let afterFailure = 10.0

    /// Removes `path`; returns nil when it is gone, else why it could not be removed.
    static func remove(_ path: String, sftp: SFTPSession?, connection: SSHConnection, cancelled: Bool) -> String? {
        let seconds = cancelled ? afterCancellation : afterFailure
        if connection.isUsable {
            let saved = connection.policy
            connection.policy = saved.forCleanup(seconds: seconds)
            defer { connection.policy = saved }
            if let reason = removeOn(connection, sftp: sftp, path: path) { return reason }
            return nil
        }
        var options = connection.reconnectOptions
        options.cancellation = nil
        let policy = connection.policy.forCleanup(seconds: seconds)
        options.deadline = policy.deadline
        options.timeout = policy.timeout
        do {
            let fresh = try SSHConnection(endpoint: connection.endpoint, options: options)
            defer { fresh.disconnect() }
            return removeOn(fresh, sftp: nil, path: path)
        } catch {
            return "could not reconnect to remove it (\(error))"
        }
    }

    /// Removes `path` over SFTP (the given session, or a new one), else with `rm -f` over an exec channel.
    private static func removeOn(_ connection: SSHConnection, sftp: SFTPSession?, path: String) -> String? {
        var sftpFailure: String?
        do {
            let session = try sftp ?? connection.openSFTP()
            try session.remove(path)
            return nil
        } catch let error as KDCTError where error.code == .notFound {
            return nil
        } catch {
            sftpFailure = "\(error)"
        }
        guard connection.isUsable,
              let result = try? connection.run("rm -f -- \(TextEncoding.shellQuoted(path)) && echo removed", outputLimit: 64),
              result.status == 0, String(decoding: result.output, as: UTF8.self).contains("removed") else {
            return sftpFailure ?? "it could not be removed"
        }
        return nil
    }
}
