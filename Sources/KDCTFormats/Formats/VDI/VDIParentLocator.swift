#if canImport(Glibc)
import Glibc
#endif

/// Finds the parent of a differencing VDI (a VirtualBox snapshot).
///
/// A differencing VDI names its parent only by UUIDs: the parent is the VDI whose creation UUID equals the
/// child's link UUID, and the parent's modification UUID must still equal the child's parent UUID (a parent
/// modified after the snapshot was taken no longer matches the child's blocks). VirtualBox keeps snapshots in
/// the VM's `Snapshots/` folder and the base disk one level up, so the search looks, in order, at:
/// 1. the files given explicitly (`OpenOptions.parentFiles`, CLI `--parent FILE`),
/// 2. the `.vdi` files in the child's directory,
/// 3. the `.vdi` files in the directory above it.
///
/// Only regular files ending in `.vdi` are looked at, each opened read-only and only its header read. Under the
/// default policy a symlink in a searched directory that leads outside it is skipped; under the `none` reference
/// policy (strict mode) nothing is searched.
enum VDIParentLocator {
    /// Most directory entries looked at per directory, to bound the time a huge directory can cost.
    static let maxEntriesPerDirectory = 10_000

    /// The path of the parent of the differencing image `child` (at `childPath`), or throws `referenceRefused`
    /// (strict mode), `notFound` (no VDI with the link UUID) or `corrupt` (found, but modified since).
    static func locate(for child: VDIHeader, childPath: String, childIdentity: FileIdentity,
                       context: OpenContext) throws -> String {
        let what = "parent VDI (creation UUID \(child.linkUUID))"
        if context.options.effectiveReferencePolicy == .none {
            throw KDCTError(.referenceRefused,
                            "\(what) refused: strict mode opens no referenced file, so no parent was searched for (widen with --references)",
                            file: childPath, field: "parent")
        }
        var search = Search(child: child, childIdentity: childIdentity, visited: context.visited)
        for path in context.options.parentFiles {
            guard FilePaths.isRegularFile(path) else {
                throw KDCTError(.notFound, "--parent \(path) is not an existing regular file", file: childPath,
                                field: "parent")
            }
            if try search.matches(path, explicit: true) { return path }
        }
        if !context.options.parentFiles.isEmpty {
            search.places.append("--parent " + context.options.parentFiles.joined(separator: ", "))
        }
        let confined = context.options.effectiveReferencePolicy == .sameDirectory
        for directory in searchedDirectories(childPath) {
            if let path = try search.firstMatch(in: directory, confined: confined) { return path }
        }
        if let mismatch = search.mismatch {
            throw KDCTError(.corrupt,
                            "\(what) found at \(mismatch.path), but its modification UUID is \(mismatch.modification) "
                                + "while this snapshot expects parent UUID \(child.parentModificationUUID ?? .null): "
                                + "the parent was modified after the snapshot was taken",
                            file: childPath, field: "parent UUID")
        }
        throw KDCTError(.notFound,
                        "\(what) not found; searched \(search.places.joined(separator: "; ")) (give it with --parent FILE)",
                        file: childPath, field: "parent")
    }

    /// The child's directory, then the one above it (VirtualBox's `Snapshots/` layout).
    static func searchedDirectories(_ childPath: String) -> [String] {
        let childDirectory = FilePaths.directory(of: childPath)
        var directories = [childDirectory]
        if let canonical = FilePaths.canonical(childDirectory), canonical != "/" {
            let above = FilePaths.directory(of: canonical)
            if FilePaths.canonical(above) != canonical { directories.append(above) }
        }
        return directories
    }

    /// One search: what was looked at, and a parent found with the wrong modification UUID.
    private struct Search {
        let child: VDIHeader
        let childIdentity: FileIdentity
        let visited: Set<FileIdentity>
        var mismatch: (path: String, modification: VDIUUID)?
        var places: [String] = []

        init(child: VDIHeader, childIdentity: FileIdentity, visited: Set<FileIdentity>) {
            self.child = child
            self.childIdentity = childIdentity
            self.visited = visited
        }

        /// True when `path` is the parent; records a parent found with the wrong modification UUID. Only an
        /// explicitly given file that cannot be opened is an error.
        mutating func matches(_ path: String, explicit: Bool) throws -> Bool {
            let file: ReadOnlyFile
            do {
                file = try ReadOnlyFile(path: path)
            } catch {
                if explicit { throw error }
                return false
            }
            if file.identity == childIdentity || visited.contains(file.identity) { return false }
            let count = Int(min(UInt64(VDIHeader.readSize), file.size))
            guard let bytes = try? file.readBytes(count: count, at: 0, what: "VDI header"),
                  let header = try? VDIHeader.decode(bytes), header.creationUUID == child.linkUUID else { return false }
            guard let expected = child.parentModificationUUID, !expected.isNull else { return true }
            if header.modificationUUID == expected { return true }
            if mismatch == nil { mismatch = (path, header.modificationUUID) }
            return false
        }

        /// The first `.vdi` file in `directory` that is the parent. With `confined` (the default policy) a symlink
        /// leading out of the directory is not followed.
        mutating func firstMatch(in directory: String, confined: Bool) throws -> String? {
            places.append(directory)
            let prefix = (FilePaths.canonical(directory) ?? directory).appendingSlash
            for name in vdiFileNames(in: directory) {
                let path = FilePaths.join(directory, name)
                guard FilePaths.isRegularFile(path) else { continue }
                if confined, !(FilePaths.canonical(path) ?? "").hasPrefix(prefix) { continue }
                if try matches(path, explicit: false) { return path }
            }
            return nil
        }
    }

    /// Names of the entries of `directory` ending in `.vdi` (any case), sorted, at most
    /// `maxEntriesPerDirectory` entries examined.
    static func vdiFileNames(in directory: String) -> [String] {
        guard let handle = opendir(directory) else { return [] }
        defer { closedir(handle) }
        var names: [String] = []
        var examined = 0
        while examined < maxEntriesPerDirectory, let entry = readdir(handle) {
            examined += 1
            let name = withUnsafePointer(to: &entry.pointee.d_name) {
                String(cString: UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self))
            }
            if FilePaths.fileExtension(of: name) == "vdi" { names.append(name) }
        }
        return names.sorted()
    }
}

extension String {
    /// The path with exactly one trailing slash.
    fileprivate var appendingSlash: String { hasSuffix("/") ? self : self + "/" }
}
