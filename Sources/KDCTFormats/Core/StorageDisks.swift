import CKDCTShims
#if canImport(Glibc)
import Glibc
#endif

/// The disks that hold a file's data, as Linux's sysfs describes them, to tell whether reading one file and
/// writing another compete for the same disk.
///
/// A disk is named as in `/sys/class/block` (`vda`, `sdb`, `nvme0n1`). A partition is on its disk; a
/// device-mapper (LVM, dm-crypt) or md device is on all the devices under it (`slaves/`); a loop device is on the
/// disks of its backing file. A file on tmpfs, NFS or SMB is on no local disk (the empty set). Anything sysfs does
/// not explain (btrfs and other file systems with an anonymous device number, FUSE, a deleted backing file) is
/// unknown (nil), and callers treat unknown as shared: the conservative answer.
package enum StorageDisks {
    /// The disks under the open file `descriptor`: its device for a block device, else its file system's.
    package static func of(descriptor: Int32) -> Set<String>? {
        var st = stat()
        guard fstat(descriptor, &st) == 0 else { return nil }
        return of(status: st, depth: 0) { kdct_file_system_type(descriptor) }
    }

    /// The disks under a file whose `stat` is `st`: its device for a block device, else its file system's, and
    /// for a file system on no block device, none (memory, network) or unknown, by `fileSystemType`.
    private static func of(status st: stat, depth: Int, fileSystemType: () -> UInt64) -> Set<String>? {
        if st.st_mode & S_IFMT == S_IFBLK { return of(device: st.st_rdev, depth: depth) }
        if kdct_device_major(st.st_dev) != 0 { return of(device: st.st_dev, depth: depth) }
        return onNoDisk(fileSystemType()) ? [] : nil
    }

    /// True unless both sets are known and have no disk in common.
    package static func mayShare(_ first: Set<String>?, _ second: Set<String>?) -> Bool {
        guard let first, let second else { return true }
        return !first.isDisjoint(with: second)
    }

    /// tmpfs and ramfs (memory), NFS and SMB (the network): file systems whose data is on no local disk
    /// (statfs(2) magic numbers).
    private static func onNoDisk(_ fileSystemType: UInt64) -> Bool {
        [0x0102_1994, 0x8584_58f6, 0x6969, 0xFF53_4D42, 0xFE53_4D42].contains(fileSystemType)
    }

    /// Loop devices over files on loop devices end somewhere; this bounds a pathological stack.
    private static let maximumDepth = 8

    private static func of(device: dev_t, depth: Int) -> Set<String>? {
        let name = "\(kdct_device_major(device)):\(kdct_device_minor(device))"
        guard let directory = realPath("/sys/dev/block/" + name) else { return nil }
        return of(sysfsDirectory: directory, depth: depth)
    }

    /// The disks under the block device whose sysfs directory is `directory` (`/sys/devices/.../block/NAME`).
    private static func of(sysfsDirectory directory: String, depth: Int) -> Set<String>? {
        guard depth < maximumDepth else { return nil }
        // A partition's directory sits inside its disk's.
        if exists(directory + "/partition") {
            return of(sysfsDirectory: parent(of: directory), depth: depth + 1)
        }
        if let backing = readLine(directory + "/loop/backing_file") {
            return ofFile(atPath: backing, depth: depth + 1)
        }
        let lower = entries(of: directory + "/slaves")
        if !lower.isEmpty {
            var disks: Set<String> = []
            for name in lower {
                guard let below = realPath("/sys/class/block/\(name)"),
                      let found = of(sysfsDirectory: below, depth: depth + 1) else { return nil }
                disks.formUnion(found)
            }
            return disks
        }
        return [String(directory.split(separator: "/").last ?? "")]
    }

    /// The disks under the file at `path` (a loop device's backing file).
    private static func ofFile(atPath path: String, depth: Int) -> Set<String>? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return of(status: st, depth: depth) { kdct_file_system_type_at(path) }
    }

    private static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    private static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    private static func parent(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/"), slash != path.startIndex else { return "/" }
        return String(path[..<slash])
    }

    /// The first line of a small sysfs file, without its newline; nil when absent or empty.
    private static func readLine(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 4097)
        let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, 4096) }
        guard count > 0 else { return nil }
        let text = String(decoding: buffer[..<count], as: UTF8.self)
        let line = text.split(separator: "\n", omittingEmptySubsequences: false).first.map(String.init) ?? ""
        return line.isEmpty ? nil : line
    }

    private static func entries(of directory: String) -> [String] {
        guard let handle = opendir(directory) else { return [] }
        defer { closedir(handle) }
        var names: [String] = []
        while let entry = readdir(handle) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }
}
