import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// `serve --open`: shows the web app in the desktop's browser with `xdg-open`, as Jupyter does.
///
/// The token URL is not put on xdg-open's command line, where every local user can read it in `/proc` while
/// the browser starts: it goes into a page readable only by the user (`open.html` in the state folder, mode
/// 0600) that forwards the browser to it, and xdg-open gets that file's `file://` address.
public enum BrowserLauncher {
    /// The name of the forwarding page in the state folder.
    static let pageName = "open.html"

    /// True when a graphical session can show a browser: `DISPLAY` (X11) or `WAYLAND_DISPLAY` is set.
    public static func hasDesktopSession(_ environment: [String: String] = ProcessInfo.processInfo.environment) -> Bool {
        ["DISPLAY", "WAYLAND_DISPLAY"].contains { !(environment[$0] ?? "").isEmpty }
    }

    /// Writes the forwarding page for `url` into `stateDirectory` and starts `xdg-open` on it (found on
    /// `PATH`; its output is discarded, it is not waited for). Returns what the user should read: what was
    /// opened, or why nothing was.
    public static func open(url: String, stateDirectory: String,
                            environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        guard hasDesktopSession(environment) else {
            return "--open: no desktop session (neither DISPLAY nor WAYLAND_DISPLAY is set); open the address above in a browser"
        }
        let page = stateDirectory.hasSuffix("/") ? stateDirectory + pageName : stateDirectory + "/" + pageName
        do {
            try writePrivately(forwardingPage(to: url), to: page)
        } catch {
            return "--open: cannot write \(page): \(error); open the address above in a browser"
        }
        let fileURL = URL(fileURLWithPath: page).absoluteString
        let status = spawnDetached(["xdg-open", fileURL])
        guard status == 0 else {
            return "--open: cannot run xdg-open (\(String(cString: strerror(status)))); open the address above in a browser"
        }
        return "--open: opening the web app in your browser (xdg-open \(fileURL))"
    }

    /// A page that sends the browser on to `url` (no script: a meta refresh, and a link).
    static func forwardingPage(to url: String) -> String {
        let escaped = url.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "\"", with: "&quot;")
            .replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
        return """
            <!doctype html>
            <html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="0;url=\(escaped)">
            <title>KDCT-native</title></head>
            <body><p><a href="\(escaped)">Open KDCT-native</a></p></body></html>

            """
    }

    /// Writes `text` to `path` with mode 0600 (replacing an older page; never following a symlink).
    private static func writePrivately(_ text: String, to path: String) throws {
        if unlink(path) != 0 && errno != ENOENT { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        let descriptor = Glibc.open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        defer { close(descriptor) }
        let bytes = Array(text.utf8)
        var written = 0
        while written < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress! + written, $0.count - written) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
            written += n
        }
    }

    /// Starts `arguments` (the program looked up on PATH) with stdin, stdout and stderr on /dev/null, signals
    /// unblocked, and a thread that reaps it. Returns 0 or the errno of the failed start.
    private static func spawnDetached(_ arguments: [String]) -> Int32 {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        var defaults = sigset_t()
        sigfillset(&defaults)
        posix_spawnattr_setsigmask(&attributes, &empty)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid: pid_t = 0
        let status = posix_spawnp(&pid, arguments[0], &actions, &attributes, &argv, environ)
        guard status == 0 else { return status }
        let child = pid
        Thread.detachNewThread {
            var exit: Int32 = 0
            while waitpid(child, &exit, 0) < 0 && errno == EINTR {}
        }
        return 0
    }
}
