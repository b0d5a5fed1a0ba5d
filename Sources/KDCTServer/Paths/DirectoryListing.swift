#if canImport(Glibc)
import Glibc
#endif

/// `GET /files`: the roots, or one folder inside them (folders first, then files by name), each entry with its
/// kind, size, allocated size and modification time, and for regular files the format probed from the content
/// and the virtual size. A symlink is followed only when its target is inside the roots.
enum DirectoryListing {
    /// Entries returned per folder (the answer says `truncated` beyond).
    static let maxEntries = 5000
    /// Files whose content is probed per listing (each probe reads the head and tail of the file).
    static let maxProbed = 1000
    /// The largest file `GET /files/content` returns.
    static let maxTextBytes = 1 << 20

    /// The roots as a listing.
    static func roots(_ roots: RootSet) -> JSONValue {
        .object([
            ("path", .null),
            ("parent", .null),
            ("entries", .array(roots.roots.map { root in
                var st = stat()
                _ = stat(root, &st)
                return .object([("name", .string(root)), ("path", .string(root)), ("kind", .string("directory")),
                                ("modified", .string(Timestamp.rfc3339(Double(st.st_mtim.tv_sec))))]
                                + (freeBytes(root).map { [("free", .uint($0))] } ?? []))
            })),
            ("truncated", .bool(false)),
        ])
    }

    /// The folder `directory` (canonical, inside the roots).
    static func list(_ directory: String, roots: RootSet, engine: LibraryEngine) throws -> JSONValue {
        guard let folder = opendir(directory) else {
            throw Problem(errno == EACCES ? .forbidden : .notFound, code: "io",
                          "cannot list \(directory): \(String(cString: strerror(errno)))", file: directory)
        }
        var names: [String] = []
        var truncated = false
        while let entry = readdir(folder) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name == "." || name == ".." { continue }
            guard names.count < maxEntries else {
                truncated = true
                break
            }
            names.append(name)
        }
        closedir(folder)
        var probes = 0
        let entries: [(isFolder: Bool, name: String, value: JSONValue)] = names.map { name in
            let path = directory == "/" ? "/" + name : directory + "/" + name
            let value = entry(name: name, path: path, roots: roots, engine: engine, probe: probes < maxProbed)
            if value["kind"]?.stringValue == "file" { probes += 1 }
            return (value["kind"]?.stringValue == "directory", name, value)
        }.sorted { ($0.isFolder ? 0 : 1, $0.name.lowercased(), $0.name) < ($1.isFolder ? 0 : 1, $1.name.lowercased(), $1.name) }
        let parent = RootSet.directory(of: directory)
        var pairs: [(String, JSONValue)] = [
            ("path", .string(directory)),
            ("parent", roots.roots.contains(directory) || !roots.contains(parent) ? .null : .string(parent)),
        ]
        if let free = freeBytes(directory) { pairs.append(("free", .uint(free))) }
        pairs.append(("entries", .array(entries.map(\.value))))
        pairs.append(("truncated", .bool(truncated)))
        return .object(pairs)
    }

    private static func entry(name: String, path: String, roots: RootSet, engine: LibraryEngine, probe: Bool) -> JSONValue {
        var pairs: [(String, JSONValue)] = [("name", .string(name)), ("path", .string(path))]
        var st = stat()
        guard lstat(path, &st) == 0 else { return .object(pairs + [("kind", .string("other"))]) }
        if (st.st_mode & S_IFMT) == S_IFLNK {
            pairs.append(("symlink", .bool(true)))
            guard let target = RootSet.realPath(path), roots.contains(target), stat(target, &st) == 0 else {
                return .object(pairs + [("kind", .string("symlink")), ("inside-roots", .bool(false))])
            }
        }
        let kind: String
        switch st.st_mode & S_IFMT {
        case S_IFDIR: kind = "directory"
        case S_IFREG: kind = "file"
        default: kind = "other"
        }
        pairs += [
            ("kind", .string(kind)),
            ("size", .int(Int64(st.st_size))),
            ("allocated-size", .int(Int64(st.st_blocks) * 512)),
            ("modified", .string(Timestamp.rfc3339(Double(st.st_mtim.tv_sec) + Double(st.st_mtim.tv_nsec) / 1e9))),
        ]
        if kind == "file" && probe, let probed = engine.probe(file: path) {
            pairs.append(("format", .string(probed.format)))
            if let size = probed.virtualSize { pairs.append(("virtual-size", .uint(size))) }
        }
        return .object(pairs)
    }

    /// The bytes of a small text file (the libvirt domain XML of an appliance job, say).
    static func textContent(of path: String) throws -> [UInt8] {
        guard RootSet.fileType(path) == S_IFREG else {
            throw Problem(.unprocessableContent, code: "not-text", "\(path) is not a regular file", file: path)
        }
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else {
            throw Problem(errno == EACCES ? .forbidden : .notFound, code: "io",
                          "cannot open \(path): \(String(cString: strerror(errno)))", file: path)
        }
        defer { close(descriptor) }
        var bytes = [UInt8](repeating: 0, count: maxTextBytes + 1)
        var count = 0
        while count < bytes.count {
            let n = bytes.withUnsafeMutableBytes { read(descriptor, $0.baseAddress! + count, $0.count - count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { break }
            count += n
        }
        guard count <= maxTextBytes else {
            throw Problem(.unprocessableContent, code: "not-text", "\(path) is larger than 1 MiB", file: path)
        }
        bytes.removeSubrange(count...)
        guard !bytes.contains(0), String(validating: bytes, as: UTF8.self) != nil else {
            throw Problem(.unprocessableContent, code: "not-text", "\(path) is not a UTF-8 text file", file: path)
        }
        return bytes
    }

    /// Bytes an unprivileged user may still write in the file system of `folder`.
    static func freeBytes(_ folder: String) -> UInt64? {
        var info = statvfs()
        guard statvfs(folder, &info) == 0 else { return nil }
        return UInt64(info.f_bavail) * UInt64(info.f_frsize)
    }
}
