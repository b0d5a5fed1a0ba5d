#if canImport(Glibc)
import Glibc
#endif

/// The directories the service may read, list and write (`serve --root`), and the one gate every path a client
/// names goes through: sources, destinations, key files, parents and listings.
///
/// A path is refused (403, naming it) when it contains a NUL byte or a `..` component, when it lies outside every
/// root, or when symlinks resolve it to a place outside every root. The check works on the canonical path
/// (`realpath`), so the library later opens exactly what was checked, barring a symlink swapped in between by
/// someone who can already write inside the root.
public struct RootSet: Sendable {
    /// The roots, canonical (symlinks resolved, no trailing slash except for `/`).
    public let roots: [String]

    /// Canonicalizes `directories`; each must exist and be a directory.
    public init(_ directories: [String]) throws {
        var roots: [String] = []
        for directory in directories {
            guard let canonical = Self.realPath(directory) else {
                throw Problem(.badRequest, code: "not-found", "root \(directory) does not exist", file: directory)
            }
            guard Self.fileType(canonical) == S_IFDIR else {
                throw Problem(.badRequest, code: "invalid-argument", "root \(directory) is not a directory", file: directory)
            }
            if !roots.contains(canonical) { roots.append(canonical) }
        }
        guard !roots.isEmpty else { throw Problem(.badRequest, code: "invalid-argument", "no root directory given") }
        self.roots = roots
    }

    /// True when the canonical path `canonical` is a root or lies below one.
    public func contains(_ canonical: String) -> Bool {
        roots.contains { root in
            root == "/" || canonical == root || canonical.hasPrefix(root + "/")
        }
    }

    /// The canonical path of the existing file or directory `path` (absolute, inside a root). `field` names the
    /// request field for messages.
    public func existing(_ path: String, field: String) throws(Problem) -> String {
        try checkSyntax(path, field: field)
        let lexical = Self.normalized(path)
        guard contains(lexical) || containsThroughSymlinkedRoot(lexical) else {
            throw .forbiddenPath(path, "outside the service's root directories", field: field)
        }
        guard let canonical = Self.realPath(path) else {
            if Self.isSymlink(path) {
                throw .forbiddenPath(path, "a symlink whose target does not exist", field: field)
            }
            throw Problem(.notFound, code: "not-found", "\(path): no such file or directory", file: path, field: field)
        }
        guard contains(canonical) else {
            throw .forbiddenPath(path, "resolves to a place outside the service's root directories (through a symlink)",
                                 field: field)
        }
        return canonical
    }

    /// The canonical path a new file `path` would have: its folder must exist inside a root; when `path` exists
    /// (a file to replace, or a symlink to one) it must resolve inside a root too.
    public func destination(_ path: String, field: String) throws(Problem) -> String {
        try checkSyntax(path, field: field)
        let lexical = Self.normalized(path)
        guard contains(lexical) || containsThroughSymlinkedRoot(lexical) else {
            throw .forbiddenPath(path, "outside the service's root directories", field: field)
        }
        let name = Self.lastComponent(of: lexical)
        guard !name.isEmpty, name != ".", lexical != "/" else {
            throw .badRequest("\(path): a destination must name a file", field: field)
        }
        let folder = Self.directory(of: lexical)
        guard let canonicalFolder = Self.realPath(folder) else {
            throw Problem(.notFound, code: "not-found", "\(folder): the destination folder does not exist",
                          file: path, field: field)
        }
        guard Self.fileType(canonicalFolder) == S_IFDIR else {
            throw .badRequest("\(folder) is not a directory", field: field)
        }
        guard contains(canonicalFolder) else {
            throw .forbiddenPath(path, "its folder resolves to a place outside the service's root directories (through a symlink)",
                                 field: field)
        }
        let candidate = canonicalFolder == "/" ? "/" + name : canonicalFolder + "/" + name
        if Self.isSymlink(candidate) {
            guard let target = Self.realPath(candidate) else {
                throw .forbiddenPath(path, "a symlink whose target does not exist", field: field)
            }
            guard contains(target) else {
                throw .forbiddenPath(path, "a symlink to a place outside the service's root directories", field: field)
            }
        }
        return candidate
    }

    /// True when `lexical` is below a root as the user wrote it before canonicalization (a root given through a
    /// symlink, e.g. `/home` -> `/data/home`): the real check is on the canonical path afterwards.
    private func containsThroughSymlinkedRoot(_ lexical: String) -> Bool {
        var prefix = lexical
        while prefix != "/" && !prefix.isEmpty {
            if let canonical = Self.realPath(prefix) { return contains(canonical) }
            prefix = Self.directory(of: prefix)
        }
        return false
    }

    private func checkSyntax(_ path: String, field: String) throws(Problem) {
        guard !path.isEmpty else { throw .badRequest("\(field) is empty", field: field) }
        if path.utf8.contains(0) {
            throw .forbiddenPath(path.replacingNULs, "contains a NUL byte", field: field)
        }
        if path.split(separator: "/", omittingEmptySubsequences: false).contains("..") {
            throw .forbiddenPath(path, "contains a '..' component", field: field)
        }
        guard path.hasPrefix("/") else {
            throw .forbiddenPath(path, "not an absolute path inside the service's root directories", field: field)
        }
        guard path.utf8.count <= Int(PATH_MAX) else {
            throw .badRequest("\(field) is longer than \(PATH_MAX) bytes", field: field)
        }
    }

    // MARK: Plain path helpers (no library dependency: the server's own checks)

    /// `path` with `//` and `/./` collapsed and no trailing slash.
    static func normalized(_ path: String) -> String {
        let parts = path.split(separator: "/", omittingEmptySubsequences: true).filter { $0 != "." }
        return "/" + parts.joined(separator: "/")
    }

    /// The folder of `path` (`/` for a top-level name).
    static func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        let folder = String(path[..<slash])
        return folder.isEmpty ? "/" : folder
    }

    /// The last component of `path`.
    static func lastComponent(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return path }
        return String(path[path.index(after: slash)...])
    }

    /// `realpath(3)`, or nil when the path does not resolve.
    static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    /// The `S_IFMT` bits of what `path` names (following symlinks), or nil.
    static func fileType(_ path: String) -> mode_t? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return st.st_mode & S_IFMT
    }

    /// True when `path` itself is a symlink.
    static func isSymlink(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFLNK
    }
}

extension String {
    /// The string with NUL bytes shown as `\0`, for messages.
    var replacingNULs: String {
        String(decoding: utf8.flatMap { $0 == 0 ? Array("\\0".utf8) : [$0] }, as: UTF8.self)
    }
}
