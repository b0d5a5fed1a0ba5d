import Foundation
import KDCTFormats
import KDCTTestSupport
import Testing

/// File destinations: symlinks kept, writing into existing images (`-n`), the free-space check, and issue 12's
/// bugs 3 (0-byte qcow2 leak), 5 (raw under a .qcow2 name), 6 (errors naming the temporary file) and 7 (stale
/// temporary files).
@Suite struct FileDestinationTests {
    static let sourceSize: UInt64 = 12 << 20

    func makeSource(_ directory: TemporaryDirectory) throws -> String {
        try TestPattern.writeRaw(to: directory.file("source.raw"), size: Self.sourceSize)
    }

    /// A regular file of `size` bytes, every byte `fill` (allocated, so old content would show).
    func writeFilled(_ path: String, size: Int, fill: UInt8) throws {
        try Data(repeating: fill, count: size).write(to: URL(fileURLWithPath: path))
    }

    func listing(_ directory: String) -> [String] {
        (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
    }

    @Test func symlinkDestinationKeepsTheLinkAndWritesItsTarget() throws {
        let directory = try TemporaryDirectory("kdct-dst")
        let source = try makeSource(directory)
        try FileManager.default.createDirectory(atPath: directory.file("images"), withIntermediateDirectories: false)
        let link = directory.file("disk.qcow2")
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: "images/real.qcow2")
        let target = directory.file("images/real.qcow2")

        // A dangling link: its target is created.
        let created = try CLI.run(["convert", "-O", "qcow2", source, link])
        #expect(created.status == 0, "\(created.stderr)")
        #expect(FilePaths.status(link)?.kind == .symbolicLink)
        #expect(FilePaths.readLink(link) == "images/real.qcow2")
        #expect(FilePaths.status(target)?.kind == .regularFile)
        try expectQemuIdentical(source, target, formatA: "raw", formatB: "qcow2")
        try expectQemuCheckClean(target)

        // The target exists now: --force is needed, and then the target is replaced, the link kept.
        let refused = try CLI.run(["convert", "-O", "raw", source, link])
        #expect(refused.status == 1)
        #expect(refused.stderr.contains("--force") && refused.stderr.contains("disk.qcow2"), "\(refused.stderr)")
        let replaced = try CLI.run(["convert", "--force", "-O", "raw", source, link])
        #expect(replaced.status == 0, "\(replaced.stderr)")
        #expect(FilePaths.status(link)?.kind == .symbolicLink)
        #expect(FilePaths.readLink(link) == "images/real.qcow2")
        try expectQemuIdentical(source, target, formatA: "raw", formatB: "raw")
        // No temporary file is left beside the link or the target.
        #expect(!(listing(directory.path) + listing(directory.file("images"))).contains { $0.hasSuffix(".part") })
    }

    /// `-t unsafe --force` replaces the file by exchanging names (no writeback forced by a rename over it): through
    /// a symlink the link is kept and its target replaced, the old file is not written (a second hard link to it
    /// keeps the old bytes, and is its only name afterwards) and no temporary file is left.
    @Test func unsafeForceReplacesByExchangeAndLeavesNothing() throws {
        let directory = try TemporaryDirectory("kdct-dst-unsafe")
        let source = try makeSource(directory)
        try FileManager.default.createDirectory(atPath: directory.file("images"), withIntermediateDirectories: false)
        let target = directory.file("images/real.raw")
        try writeFilled(target, size: 1 << 20, fill: 0x5A)
        let oldName = directory.file("old.raw")
        #expect(link(target, oldName) == 0)
        let symlink = directory.file("disk.raw")
        try FileManager.default.createSymbolicLink(atPath: symlink, withDestinationPath: "images/real.raw")

        for destination in [symlink, target] {
            let replaced = try CLI.run(["convert", "--force", "-t", "unsafe", "-O", "raw", source, destination])
            #expect(replaced.status == 0, "\(replaced.stderr)")
            try expectQemuIdentical(source, target, formatA: "raw", formatB: "raw")
        }
        #expect(FilePaths.status(symlink)?.kind == .symbolicLink)
        #expect(FilePaths.readLink(symlink) == "images/real.raw")
        var status = stat()
        #expect(stat(oldName, &status) == 0 && status.st_nlink == 1, "the old file still has \(status.st_nlink) names")
        #expect(try Data(contentsOf: URL(fileURLWithPath: oldName)) == Data(repeating: 0x5A, count: 1 << 20))
        #expect(!(listing(directory.path) + listing(directory.file("images"))).contains { $0.hasSuffix(".part") })
    }

    @Test func writeIntoAnExistingRawFileInPlace() throws {
        let directory = try TemporaryDirectory("kdct-dst")
        let source = try makeSource(directory)
        let existing = directory.file("existing.raw")
        try writeFilled(existing, size: 16 << 20, fill: 0xAB)
        let inode = FilePaths.status(existing)?.identity
        let result = try CLI.run(["convert", "-n", "-O", "raw", source, existing])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(FilePaths.status(existing)?.identity == inode, "-n must write in place, not replace the file")
        let data = try Data(contentsOf: URL(fileURLWithPath: existing))
        #expect(data.count == 16 << 20, "the file keeps its size")
        let prefix = directory.file("prefix.raw")
        try data.prefix(Int(Self.sourceSize)).write(to: URL(fileURLWithPath: prefix))
        try expectQemuIdentical(source, prefix, formatA: "raw", formatB: "raw")
        #expect(data.suffix(4 << 20).allSatisfy { $0 == 0xAB }, "bytes past the source's size were touched")

        // Smaller than the source: refused, both sizes named, file untouched.
        let small = directory.file("small.raw")
        try writeFilled(small, size: 1 << 20, fill: 0xCD)
        let refused = try CLI.run(["convert", "-n", "-O", "raw", source, small])
        #expect(refused.status == 1)
        #expect(refused.stderr.contains("\(1 << 20)") && refused.stderr.contains("\(Self.sourceSize)"), "\(refused.stderr)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: small)).allSatisfy { $0 == 0xCD })

        // Nothing to write into, -o with -n, --target-is-zero without -n: refused.
        #expect(try CLI.run(["convert", "-n", source, directory.file("missing.raw")]).status == 1)
        #expect(!FileManager.default.fileExists(atPath: directory.file("missing.raw")))
        #expect(try CLI.run(["convert", "-n", "-o", "preallocation=full", source, existing]).status == 1)
        #expect(try CLI.run(["convert", "--target-is-zero", source, directory.file("x.raw")]).status == 1)
    }

    @Test func writeIntoAnExistingQCOW2File() throws {
        let directory = try TemporaryDirectory("kdct-dst")
        let source = try makeSource(directory)
        let existing = directory.file("existing.qcow2")
        try qemuImg("create", "-q", "-f", "qcow2", "-o", "cluster_size=16384", existing, "20M")
        // Old guest data everywhere: none of it may show through afterwards.
        try qemuImg("convert", "-n", "-O", "qcow2", try makeFilledRaw(directory, size: 20 << 20), existing)
        let inode = FilePaths.status(existing)?.identity
        let result = try CLI.run(["convert", "-n", source, existing])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(FilePaths.status(existing)?.identity == inode)
        try expectQemuIdentical(source, existing, formatA: "raw", formatB: "qcow2")
        try expectQemuCheckClean(existing)
        let info = try qemuImg("info", "--output", "json", existing)
        let json = try JSONSerialization.jsonObject(with: Data(info.stdout.utf8)) as? [String: Any]
        #expect(json?["virtual-size"] as? Int == 20 << 20)
        #expect(json?["cluster-size"] as? Int == 16384)

        // An existing qcow2 with a backing file is refused (its data would show through).
        let base = directory.file("base.qcow2")
        try qemuImg("create", "-q", "-f", "qcow2", base, "20M")
        let overlay = directory.file("overlay.qcow2")
        try qemuImg("create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", overlay)
        let backed = try CLI.run(["convert", "-n", "-O", "qcow2", source, overlay])
        #expect(backed.status == 1)
        #expect(backed.stderr.contains("backing file"), "\(backed.stderr)")
        // -O qcow2 into something that is not a qcow2: refused.
        let raw = directory.file("plain.raw")
        try writeFilled(raw, size: 16 << 20, fill: 1)
        #expect(try CLI.run(["convert", "-n", "-O", "qcow2", source, raw]).status == 1)
    }

    /// A raw file of `size` bytes of 0x55.
    func makeFilledRaw(_ directory: TemporaryDirectory, size: Int) throws -> String {
        let path = directory.file("filled-\(size).raw")
        try writeFilled(path, size: size, fill: 0x55)
        return path
    }

    /// Bug 3: a 0-byte input converted to qcow2 leaked a cluster (qemu-img check exit 3).
    @Test func zeroByteInputMakesACleanQCOW2() throws {
        let directory = try TemporaryDirectory("kdct-dst")
        let empty = directory.file("empty.raw")
        #expect(FileManager.default.createFile(atPath: empty, contents: Data()))
        for (name, extra) in [("empty.qcow2", [String]()), ("empty-c.qcow2", ["-c"]), ("empty-4k.qcow2", ["-o", "cluster_size=4k"])] {
            let out = directory.file(name)
            let result = try CLI.run(["convert", "-f", "raw", "-O", "qcow2"] + extra + [empty, out])
            #expect(result.status == 0, "\(result.stderr)")
            let check = try runProcess(["qemu-img", "check", out])
            #expect(check.status == 0, "\(name): \(check.stdout)")
            try expectQemuIdentical(empty, out, formatA: "raw", formatB: "qcow2")
            #expect(try CLI.run(["info", out]).status == 0)
        }
    }

    /// Bug 5: without -O, a .qcow2 name gets qcow2 (info reads it), a name of a format not written is refused.
    @Test func outputFormatFollowsTheNameOrIsRefused() throws {
        let directory = try TemporaryDirectory("kdct-dst")
        let source = try makeSource(directory)
        let qcow2 = directory.file("out.qcow2")
        let written = try CLI.run(["convert", source, qcow2])
        #expect(written.status == 0, "\(written.stderr)")
        let info = try CLI.run(["info", "--output", "json", qcow2])
        #expect(info.status == 0, "info refuses the tool's own output: \(info.stderr)")
        #expect(info.stdout.contains("\"format\": \"qcow2\""))
        try expectQemuIdentical(source, qcow2, formatA: "raw", formatB: "qcow2")
        try expectQemuCheckClean(qcow2)

        for name in ["out.vmdk", "out.vdi", "out.vhd", "out.vhdx", "out.qed"] {
            let refused = try CLI.run(["convert", source, directory.file(name)])
            #expect(refused.status == 1, "\(name)")
            #expect(refused.stderr.contains("-O"), "\(name): \(refused.stderr)")
            #expect(!FileManager.default.fileExists(atPath: directory.file(name)))
        }
        // An explicit -O raw is the user's choice.
        let explicit = try CLI.run(["convert", "-O", "raw", source, directory.file("raw.vmdk")])
        #expect(explicit.status == 0, "\(explicit.stderr)")
        try expectQemuIdentical(source, directory.file("raw.vmdk"), formatA: "raw", formatB: "raw")
    }

    /// Bug 6: a destination error names the destination (or its folder), never the hidden temporary file.
    @Test func destinationErrorsNameTheDestination() throws {
        let directory = try TemporaryDirectory("kdct-dst")
        let source = try makeSource(directory)
        let missingFolder = directory.file("no-such-folder/out.qcow2")
        let result = try CLI.run(["convert", "-O", "qcow2", source, missingFolder])
        #expect(result.status == 1)
        #expect(result.stderr.contains("no-such-folder/out.qcow2"), "\(result.stderr)")
        #expect(!result.stderr.contains(".part") && !result.stderr.contains(".kdct-"), "\(result.stderr)")
        // A read-only folder: the error names the destination, not the temporary file.
        let locked = directory.file("dir.qcow2")
        try FileManager.default.createDirectory(atPath: locked, withIntermediateDirectories: false)
        let isDirectory = try CLI.run(["convert", "-O", "qcow2", source, locked])
        #expect(isDirectory.status == 1)
        #expect(isDirectory.stderr.contains("dir.qcow2") && isDirectory.stderr.contains("directory"), "\(isDirectory.stderr)")
    }

    /// Bug 7: a temporary file nobody holds locked is an orphan (its writer was killed) and the next conversion to
    /// that destination removes it; one a live writer holds is kept; neither is ever opened as an image.
    @Test func staleTemporaryFilesAreRemovedAndLiveOnesKept() throws {
        let directory = try TemporaryDirectory("kdct-dst")
        let source = try makeSource(directory)
        let destination = directory.file("out.qcow2")
        let stale = directory.file(".out.qcow2.kdct-abc12345.part")
        try writeFilled(stale, size: 4096, fill: 7)
        let live = directory.file(".out.qcow2.kdct-live0000.part")
        try writeFilled(live, size: 4096, fill: 8)
        let liveHandle = open(live, O_RDONLY)
        #expect(liveHandle >= 0)
        defer { close(liveHandle) }
        #expect(flock(liveHandle, LOCK_EX) == 0)
        let other = directory.file(".other.qcow2.kdct-abc12345.part")
        try writeFilled(other, size: 4096, fill: 9)

        let info = try CLI.run(["info", stale])
        #expect(info.status == 1)
        #expect(info.stderr.contains("temporary file"), "\(info.stderr)")

        let result = try CLI.run(["convert", "-O", "qcow2", source, destination])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: stale), "the orphaned temporary file was kept")
        #expect(FileManager.default.fileExists(atPath: live), "a live writer's temporary file was removed")
        #expect(FileManager.default.fileExists(atPath: other), "another destination's temporary file was removed")
        try expectQemuIdentical(source, destination, formatA: "raw", formatB: "qcow2")
    }

    /// The free-space check refuses up front with both numbers; without it, running out of space leaves nothing
    /// and names the destination. On a small tmpfs (the tests run as root).
    @Test func spaceCheckRefusesBeforeWriting() throws {
        let directory = try TemporaryDirectory("kdct-dst")
        let source = try makeSource(directory)
        _ = try runProcess(["qemu-io", "-f", "raw", "-c", "write -P 0x61 0 8M", source])
        let small = directory.file("small-fs")
        try FileManager.default.createDirectory(atPath: small, withIntermediateDirectories: false)
        let mount = try runProcess(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", small])
        #expect(mount.status == 0, "mount tmpfs (needs root): \(mount.stderr)")
        guard mount.status == 0 else { return }
        defer { _ = try? runProcess(["umount", small]) }

        for format in ["raw", "qcow2"] {
            let destination = small + "/out.\(format)"
            let refused = try CLI.run(["convert", "-O", format, source, destination])
            #expect(refused.status == 1)
            #expect(refused.stderr.contains("out.\(format)") && refused.stderr.contains("free"), "\(refused.stderr)")
            #expect(refused.stderr.contains("--no-space-check"), "\(refused.stderr)")
            #expect(listing(small).isEmpty, "\(listing(small))")

            let forced = try CLI.run(["convert", "--no-space-check", "-O", format, source, destination])
            #expect(forced.status == 1)
            #expect(forced.stderr.contains("out.\(format)") && !forced.stderr.contains(".part"), "\(forced.stderr)")
            #expect(listing(small).isEmpty, "\(listing(small))")
        }
        // What fits is written.
        let fits = try CLI.run(["convert", "-O", "qcow2", try TestPattern.writeRaw(to: directory.file("sparse.raw"), size: 64 << 20),
                                small + "/fits.qcow2"])
        #expect(fits.status == 0, "\(fits.stderr)")
    }
}
