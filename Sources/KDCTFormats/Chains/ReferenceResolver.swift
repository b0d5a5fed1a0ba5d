/// Applies the reference policy (docs/ARCHITECTURE.md, "References and trust") to a file name stored in an image.
public enum ReferenceResolver {
    /// Resolves `name`, stored in the image at `imagePath`, to a path that may be opened, or throws
    /// `referenceRefused` / `notFound` naming the reference.
    ///
    /// - Protocol prefixes (`json:`, `nbd:`, `http:`...) are refused under every policy.
    /// - `.none` refuses everything.
    /// - `.sameDirectory` accepts only relative paths without `..` that resolve (after following symlinks) to a
    ///   regular file inside the directory of `imagePath`.
    /// - `.any` accepts any local path to a regular file.
    package static func resolve(_ name: String, kind: ImageReference.Kind, relativeTo imagePath: String,
                               policy: ReferencePolicy) throws -> String {
        let what = "\(kind.rawValue) \"\(name)\""
        func refuse(_ why: String) -> KDCTError {
            KDCTError(.referenceRefused, "\(what) refused: \(why)", file: imagePath, field: kind.rawValue)
        }
        if name.isEmpty { throw KDCTError(.corrupt, "\(kind.rawValue) name is empty", file: imagePath, field: kind.rawValue) }
        if name.utf8.contains(0) { throw refuse("the name contains a NUL byte") }
        if let scheme = protocolPrefix(of: name) {
            throw refuse("protocol prefix \"\(scheme):\" is never followed")
        }
        switch policy {
        case .none:
            throw refuse("strict mode opens no referenced file (widen with --references)")
        case .sameDirectory:
            if name.hasPrefix("/") { throw refuse("absolute path outside the image's directory (allow with --references any)") }
            if name.split(separator: "/", omittingEmptySubsequences: false).contains("..") {
                throw refuse("path contains \"..\" (allow with --references any)")
            }
        case .any:
            break
        }
        let directory = FilePaths.directory(of: imagePath)
        let joined = FilePaths.join(directory, name)
        guard let canonical = FilePaths.canonical(joined) else {
            throw KDCTError(.notFound, "\(what) not found (looked for \(joined))", file: imagePath, field: kind.rawValue)
        }
        if policy == .sameDirectory {
            guard let canonicalDirectory = FilePaths.canonical(directory) else {
                throw KDCTError(.notFound, "directory of the image not found", file: imagePath)
            }
            let prefix = canonicalDirectory.hasSuffix("/") ? canonicalDirectory : canonicalDirectory + "/"
            if !canonical.hasPrefix(prefix) {
                throw refuse("it resolves to \(canonical), outside \(canonicalDirectory) (a symlink leaving the directory)")
            }
        }
        guard FilePaths.isRegularFile(canonical) else { throw refuse("\(canonical) is not a regular file") }
        return canonical
    }

    /// The URL-like scheme of `name` (`nbd` for `nbd:host:1`), or nil. A single drive letter (`C:`) is not a scheme.
    package static func protocolPrefix(of name: String) -> String? {
        guard let colon = name.firstIndex(of: ":") else { return nil }
        let scheme = name[..<colon]
        guard scheme.count >= 2, let first = scheme.first, first.isASCII, first.isLetter else { return nil }
        let valid = scheme.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "+" || $0 == "-" || $0 == ".") }
        return valid ? String(scheme) : nil
    }
}
