import Foundation
import KDCTFormats
import KDCTTestSupport
import Testing

/// `StorageDisks` finds the disks under a file as sysfs describes them; the expectation comes from util-linux
/// (`findmnt`, `lsblk`), which reads the same tables its own way.
@Suite struct StorageDisksTests {
    /// The disks under `path` according to util-linux: the block devices `lsblk --inverse` lists under the
    /// file system's source whose type is "disk". A file system in memory or on the network is on no disk (the
    /// empty set); one on no block device otherwise (an overlay in a container) is unknown (nil).
    static func disksByUtilLinux(of path: String) throws -> Set<String>? {
        let mount = try runProcess(["findmnt", "--noheadings", "--output", "SOURCE,FSTYPE", "--target", path])
        try #require(mount.status == 0, "findmnt: \(mount.stderr)")
        let fields = mount.stdout.split(whereSeparator: { $0 == " " || $0 == "\n" }).map(String.init)
        try #require(fields.count == 2, "findmnt printed \(mount.stdout)")
        let (source, type) = (fields[0], fields[1])
        if ["tmpfs", "ramfs", "nfs", "nfs4", "cifs", "smb3"].contains(type) { return [] }
        guard source.hasPrefix("/dev/") else { return nil }
        let tree = try runProcess(["lsblk", "--inverse", "--list", "--noheadings", "--output", "NAME,TYPE", source])
        try #require(tree.status == 0, "lsblk: \(tree.stderr)")
        let disks = tree.stdout.split(separator: "\n").compactMap { line -> String? in
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            return fields.count == 2 && fields[1] == "disk" ? String(fields[0]) : nil
        }
        return Set(disks)
    }

    static func disks(ofFile path: String) throws -> Set<String>? {
        let fd = open(path, O_RDONLY)
        try #require(fd >= 0, "open \(path)")
        defer { close(fd) }
        return StorageDisks.of(descriptor: fd)
    }

    @Test func aFileIsOnItsFileSystemsDisk() throws {
        let dir = try TemporaryDirectory("kdct-disks")
        let file = dir.file("data.bin")
        try writeRandomFile(file, size: 4096, seed: 1)
        let expected = try Self.disksByUtilLinux(of: dir.path)
        #expect(try Self.disks(ofFile: file) == expected)
    }

    @Test func tmpfsIsOnNoDisk() throws {
        let shm = "/dev/shm"
        try #require(FileManager.default.fileExists(atPath: shm), "\(shm) (tmpfs) is missing on this machine")
        let file = shm + "/kdct-disks-\(getpid())"
        try writeRandomFile(file, size: 4096, seed: 2)
        defer { unlink(file) }
        #expect(try Self.disks(ofFile: file) == [])
    }

    /// A loop device is on the disks of its backing file: the root disk for a file there, none for a file on
    /// tmpfs; a block device opened itself is resolved the same way.
    @Test func aLoopDeviceIsOnItsBackingFilesDisks() throws {
        let dir = try TemporaryDirectory("kdct-disks-loop")
        let onDisk = try LoopDevice(size: 1 << 20, in: dir)
        let expected = try Self.disksByUtilLinux(of: dir.path)
        #expect(try Self.disks(ofFile: onDisk.path) == expected)
        let inMemory = try LoopDevice(size: 1 << 20, inFolder: "/dev/shm", name: "kdct-disks-\(getpid()).img")
        defer { unlink(inMemory.backingFile) }
        #expect(try Self.disks(ofFile: inMemory.path) == [])
    }

    @Test func unknownMayShareAnything() {
        #expect(StorageDisks.mayShare(nil, ["vda"]))
        #expect(StorageDisks.mayShare(["vda"], nil))
        #expect(StorageDisks.mayShare(["vda", "vdb"], ["vdb"]))
        #expect(!StorageDisks.mayShare(["vda"], ["vdb"]))
        #expect(!StorageDisks.mayShare([], ["vda"]))
    }
}
