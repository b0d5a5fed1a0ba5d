import Foundation
import Testing
@testable import KDCTFormats
import KDCTTestSupport

/// The QCOW2 reader against images qemu-img makes at test time, in every variant the foundation issue lists.
@Suite struct QCOW2ReaderTests {
    /// A pattern raw of an odd size (not a multiple of any cluster) and the qemu-made variant of it.
    static let size: UInt64 = 9 << 20 + 4096 + 512

    /// Makes `name` from a pattern raw with `qemu-img convert` plus extra arguments, then optionally edits it
    /// with qemu-io commands (written zeros, discards) so the image holds zero clusters too.
    func makeImage(_ dir: TemporaryDirectory, _ name: String, convertArgs: [String], qemuIO: [String] = []) throws -> String {
        let raw = try TestPattern.writeRaw(to: dir.file("pattern-\(name).raw"), size: Self.size)
        let image = dir.file(name)
        try runChecked(["qemu-img", "convert", "-f", "raw", "-O", "qcow2"] + convertArgs + [raw, image])
        for command in qemuIO { try runChecked(["qemu-io", "-f", "qcow2", "-c", command, image]) }
        return image
    }

    func runChecked(_ arguments: [String]) throws {
        let result = try runProcess(arguments)
        #expect(result.status == 0, "\(arguments.joined(separator: " ")): \(result.stderr)")
        if result.status != 0 { throw KDCTError(.io, result.stderr) }
    }

    /// Checks our reading of `image` against qemu's (SHA-256 of qemu's raw export) and our conversions of it.
    func expectReadsLikeQemu(_ dir: TemporaryDirectory, _ image: String) throws {
        let truth = dir.file(FilePaths.lastComponent(of: image) + ".truth.raw")
        try runChecked(["qemu-img", "convert", "-O", "raw", image, truth])
        #expect(try guestSHA256(image) == guestSHA256(truth, format: .raw), "content of \(image)")
        let outQcow2 = dir.file(FilePaths.lastComponent(of: image) + ".out.qcow2")
        let outRaw = dir.file(FilePaths.lastComponent(of: image) + ".out.raw")
        try convertImage(image, to: outQcow2, format: .qcow2)
        try convertImage(image, to: outRaw, format: .raw)
        try expectQemuIdentical(image, outQcow2, formatB: "qcow2")
        try expectQemuIdentical(image, outRaw, formatB: "raw")
        try expectQemuCheckClean(outQcow2)
    }

    @Test(arguments: ["compat=0.10", "compat=1.1"])
    func versions(_ compat: String) throws {
        let dir = try TemporaryDirectory()
        let image = try makeImage(dir, "v.qcow2", convertArgs: ["-o", compat],
                                  qemuIO: compat == "compat=1.1" ? ["write -z 4M 1M", "discard 6M 64k"] : [])
        try expectReadsLikeQemu(dir, image)
        let info = try ImageOpener.inspect(image)
        #expect(info.subformat == (compat == "compat=0.10" ? "v2" : "v3"))
    }

    @Test(arguments: [512, 4096, 65536, 1 << 20, 2 << 20])
    func clusterSizes(_ clusterSize: Int) throws {
        let dir = try TemporaryDirectory()
        let image = try makeImage(dir, "c\(clusterSize).qcow2", convertArgs: ["-o", "cluster_size=\(clusterSize)"],
                                  qemuIO: ["write -z 2M 256k"])
        try expectReadsLikeQemu(dir, image)
        #expect(try ImageOpener.inspect(image).clusterSize == UInt64(clusterSize))
    }

    @Test(arguments: ["zlib", "zstd"])
    func compressed(_ type: String) throws {
        let dir = try TemporaryDirectory()
        let image = try makeImage(dir, "z-\(type).qcow2", convertArgs: ["-c", "-o", "compression_type=\(type)"],
                                  qemuIO: ["write -P 0x5a 5M 100k"])
        let extents = try ImageOpener.open(image).allExtents()
        #expect(extents.contains { $0.compressed }, "expected compressed clusters")
        try expectReadsLikeQemu(dir, image)
    }

    @Test(arguments: [16384, 65536])
    func extendedL2(_ clusterSize: Int) throws {
        let dir = try TemporaryDirectory()
        let image = try makeImage(dir, "x\(clusterSize).qcow2",
                                  convertArgs: ["-o", "extended_l2=on,cluster_size=\(clusterSize)"],
                                  qemuIO: ["write -z 4M 8k", "write -P 0x11 7M 1k", "write -z 8M 100k"])
        #expect(try ImageOpener.inspect(image).formatSpecific["extended-l2"] == .bool(true))
        try expectReadsLikeQemu(dir, image)
    }

    /// Issue 12, bug 2: with extended L2 entries a compressed cluster keeps the standard compressed descriptor, whose
    /// bit 0 is part of the host offset (only a standard cluster's bit 0 loses its zero-flag meaning), and its
    /// subcluster bitmap is reserved, 0. Clearing bit 0 read clusters at odd offsets from the wrong byte.
    @Test(arguments: ["zlib", "zstd"])
    func extendedL2WithCompressedClusters(_ type: String) throws {
        let dir = try TemporaryDirectory()
        let image = try makeImage(dir, "xc-\(type).qcow2",
                                  convertArgs: ["-c", "-o", "extended_l2=on,cluster_size=65536,compression_type=\(type)"])
        // The first L2 table's 16-byte entries: some compressed cluster must start at an odd host offset.
        let l1 = try ImageBytes.bigEndian(image, at: 40, width: 8)
        let l2 = Int(try ImageBytes.bigEndian(image, at: Int(l1), width: 8) & QCOW2Entry.offsetMask)
        var hosts: [UInt64] = []
        for index in 0..<Int(Self.size >> 16) {
            let entry = try ImageBytes.bigEndian(image, at: l2 + 16 * index, width: 8)
            guard entry & QCOW2Entry.compressedFlag != 0 else { continue }
            hosts.append(QCOW2Entry.compressedDescriptor(entry, clusterBits: 16).host)
            #expect(try ImageBytes.bigEndian(image, at: l2 + 16 * index + 8, width: 8) == 0, "bitmap of a compressed cluster")
        }
        #expect(hosts.contains { $0 & 1 == 1 }, "no compressed cluster at an odd offset: \(hosts)")
        #expect(try ImageOpener.open(image).allExtents().contains { $0.compressed })
        try expectReadsLikeQemu(dir, image)

        // A compressed cluster whose (reserved) subcluster bitmap is not 0 is refused, naming the entry.
        let first = try #require((0..<Int(Self.size >> 16)).first {
            try ImageBytes.bigEndian(image, at: l2 + 16 * $0, width: 8) & QCOW2Entry.compressedFlag != 0
        })
        try ImageBytes.patch(image, at: l2 + 16 * first + 8, ImageBytes.be64(1))
        let error = expectKDCTError(.corrupt) { _ = try guestSHA256(image) }
        #expect(error?.field == "L2 table 0 entry \(first)" && error?.message.contains("bitmap") == true, "\(String(describing: error))")
    }

    @Test func internalSnapshotsReadTheActiveLayer() throws {
        let dir = try TemporaryDirectory()
        let image = try makeImage(dir, "snap.qcow2", convertArgs: [])
        try runChecked(["qemu-img", "snapshot", "-c", "first", image])
        try runChecked(["qemu-io", "-f", "qcow2", "-c", "write -P 0x77 0 64k", image])
        try runChecked(["qemu-img", "snapshot", "-c", "second", image])
        try runChecked(["qemu-io", "-f", "qcow2", "-c", "write -z 1M 64k", image])
        let info = try ImageOpener.inspect(image)
        guard case let .array(snapshots)? = info.formatSpecific["snapshots"] else {
            Issue.record("no snapshots listed")
            return
        }
        #expect(snapshots.count == 2)
        try expectReadsLikeQemu(dir, image)
    }

    @Test func preallocatedMetadata() throws {
        let dir = try TemporaryDirectory()
        let image = dir.file("prealloc.qcow2")
        try runChecked(["qemu-img", "create", "-f", "qcow2", "-o", "preallocation=metadata", image, "8M"])
        try runChecked(["qemu-io", "-f", "qcow2", "-c", "write -P 0x42 1M 300k", image])
        try expectReadsLikeQemu(dir, image)
    }

    @Test func backingChains() throws {
        let dir = try TemporaryDirectory()
        let base = try makeImage(dir, "base.qcow2", convertArgs: [])
        let rawBase = try TestPattern.writeRaw(to: dir.file("base.raw"), size: Self.size)
        for (name, backing, format) in [("over-qcow2.qcow2", "base.qcow2", "qcow2"), ("over-raw.qcow2", "base.raw", "raw")] {
            let child = dir.file(name)
            try runChecked(["qemu-img", "create", "-f", "qcow2", "-b", backing, "-F", format, child])
            try runChecked(["qemu-io", "-f", "qcow2", "-c", "write -P 0xcd 100k 70k", "-c", "write -z 3M 1M", child])
            try expectReadsLikeQemu(dir, child)
            let info = try ImageOpener.inspect(child)
            #expect(info.backingFilename == backing)
            #expect(info.references.first?.opened == false, "info must not open references")
        }
        _ = base
        _ = rawBase
        // Three levels.
        let top = dir.file("top.qcow2")
        try runChecked(["qemu-img", "create", "-f", "qcow2", "-b", "over-qcow2.qcow2", "-F", "qcow2", top])
        try runChecked(["qemu-io", "-f", "qcow2", "-c", "write -P 0xee 8M 4k", top])
        try expectReadsLikeQemu(dir, top)
    }

    @Test func backingOutsideTheDirectoryIsRefusedByDefault() throws {
        let dir = try TemporaryDirectory()
        let sub = dir.file("sub")
        try FileManager.default.createDirectory(atPath: sub, withIntermediateDirectories: true)
        _ = try makeImage(dir, "base.qcow2", convertArgs: [])
        let child = sub + "/child.qcow2"
        try runChecked(["qemu-img", "create", "-f", "qcow2", "-b", "../base.qcow2", "-F", "qcow2", child])
        #expect(throws: KDCTError.self) { try ImageOpener.open(child) }
        do { _ = try ImageOpener.open(child) } catch let error as KDCTError {
            #expect(error.code == .referenceRefused)
            #expect(error.description.contains("../base.qcow2"))
        }
        var wide = OpenOptions()
        wide.referencePolicy = .any
        #expect(try ImageOpener.open(child, options: wide).virtualSize == Self.size)
        var strict = OpenOptions()
        strict.untrusted = true
        #expect(throws: KDCTError.self) { try ImageOpener.open(child, options: strict) }
    }

    @Test func encryptedAndExternalDataAreRefused() throws {
        let dir = try TemporaryDirectory()
        // crypt_method 1 (legacy AES) and 2 (LUKS), patched into a real image: creating a LUKS image with
        // qemu-img times PBKDF2 on the CPU and fails on a loaded machine ("Unable to get accurate CPU usage").
        for method: UInt8 in [1, 2] {
            let encrypted = dir.file("enc\(method).qcow2")
            try runChecked(["qemu-img", "create", "-f", "qcow2", encrypted, "4M"])
            try ImageBytes.patch(encrypted, at: 35, [method])  // the low byte of crypt_method
            let error = expectKDCTError(.unsupported) { _ = try ImageOpener.open(encrypted) }
            #expect(error?.message.contains("encrypted") == true)
            #expect(error?.field == "crypt_method")
        }
        let external = dir.file("ext.qcow2")
        try runChecked(["qemu-img", "create", "-f", "qcow2", "-o", "data_file=\(dir.file("ext.data"))", external, "4M"])
        let error = expectKDCTError(.unsupported) { _ = try ImageOpener.open(external) }
        #expect(error?.message.contains("external data file") == true)
    }

    @Test func emptyMultiTerabyteImageWalksInMetadataTime() throws {
        let dir = try TemporaryDirectory()
        let image = dir.file("empty.qcow2")
        try runChecked(["qemu-img", "create", "-f", "qcow2", image, "2T"])
        let device = try ImageOpener.open(image)
        let extents = try device.allExtents()
        #expect(extents.count == 1)
        #expect(extents.first?.status == .absent)
        #expect(extents.first?.length == 2 << 40)
    }
}
