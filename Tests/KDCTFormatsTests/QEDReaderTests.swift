import Foundation
import Testing
@testable import KDCTFormats
import KDCTTestSupport

/// The QED reader against qemu-made images (cluster sizes 4 KiB to 1 MiB), chains, zero clusters, the
/// need-check flag and damaged files.
@Suite struct QEDReaderTests {
    /// (cluster size, table size) pairs; qemu cannot open a table of one cluster (its table offset check
    /// rejects it), so the oracle tests start at 2.
    static let geometries: [(Int, Int)] = [(4096, 2), (4096, 16), (16384, 4), (65536, 4), (262_144, 2), (1 << 20, 2)]

    @Test(arguments: geometries)
    func qemuMadeImagesConvertIdentically(_ clusterSize: Int, _ tableSize: Int) throws {
        let dir = try TemporaryDirectory()
        let size: UInt64 = 12 << 20 + 9 * 512
        let source = try TestPattern.writeRaw(to: dir.file("src.raw"), size: size)
        let image = dir.file("c\(clusterSize).qed")
        try qemuImg("convert", "-f", "raw", "-O", "qed", "-o", "cluster_size=\(clusterSize),table_size=\(tableSize)", source, image)
        let device = try ImageOpener.open(image)
        #expect(device.virtualSize == size)
        #expect(device.info.format == .qed)
        #expect(device.info.clusterSize == UInt64(clusterSize))
        #expect(device.info.dirty == false)
        #expect(device.info.formatSpecific["table-size"] == .unsigned(UInt64(tableSize)))
        #expect(try GuestDigest.sha256(of: device) == guestSHA256(source, format: .raw))
        let extents = try device.allExtents()
        #expect(extents.contains { $0.status == .absent })
        let raw = try ImageOpener.open(source, options: OpenOptions(format: .raw))
        for (offset, count) in [(1, 10), (65_000, 3_000), (200_003, 2_000_000), (Int(size) - 5, 5)] {
            #expect(try device.readBytes(at: UInt64(offset), count: count) == raw.readBytes(at: UInt64(offset), count: count))
        }
        try expectConvertsIdentically(image, reference: source, referenceFormat: "raw", in: dir)
    }

    @Test func tablesOfOneClusterAreReadAsTheSpecSays() throws {
        // qemu cannot open these (its table offset check rejects one-cluster tables), so the image is built here:
        // 4 KiB clusters, 512-entry tables (2 MiB per L2 table), L1 at 4096, L2 tables at 8192 and 12288.
        let dir = try TemporaryDirectory()
        var file = QEDHeaderTests.headerBytes(clusterSize: 4096, tableSize: 1, imageSize: 4 << 20)
        file += [UInt8](repeating: 0, count: 4 * 4096 - file.count)
        func put(_ value: UInt64, at offset: Int) {
            for b in 0..<8 { file[offset + b] = UInt8(truncatingIfNeeded: value >> UInt64(8 * b)) }
        }
        put(8192, at: 4096)           // L1[0]
        put(12288, at: 4096 + 8)      // L1[1]
        let first = TestPattern.bytes(offset: 1, length: 4096, kind: "r")
        let second = TestPattern.bytes(offset: 2, length: 4096, kind: "t")
        put(16384, at: 8192)          // cluster 0: data
        put(1, at: 8192 + 8)          // cluster 1: zero
        put(20480, at: 12288 + 8 * 88) // cluster 600 (512 + 88): data
        file += first + second
        try writeTestFile(file, to: dir.file("t1.qed"))
        var guest = [UInt8](repeating: 0, count: 4 << 20)
        guest.replaceSubrange(0..<4096, with: first)
        guest.replaceSubrange((600 * 4096)..<(601 * 4096), with: second)
        try writeTestFile(guest, to: dir.file("t1.raw"))

        let device = try ImageOpener.open(dir.file("t1.qed"))
        #expect(try device.allExtents() == [
            Extent(offset: 0, length: 4096, status: .data, hostOffset: 16384, file: dir.file("t1.qed")),
            Extent(offset: 4096, length: 4096, status: .zero),
            Extent(offset: 8192, length: 600 * 4096 - 8192, status: .absent),
            Extent(offset: 600 * 4096, length: 4096, status: .data, hostOffset: 20480, file: dir.file("t1.qed")),
            Extent(offset: 601 * 4096, length: (4 << 20) - 601 * 4096, status: .absent),
        ])
        #expect(try GuestDigest.sha256(of: device) == guestSHA256(dir.file("t1.raw"), format: .raw))
        try convertImage(dir.file("t1.qed"), to: dir.file("out.qcow2"), format: .qcow2)
        try expectQemuIdentical(dir.file("t1.raw"), dir.file("out.qcow2"), formatA: "raw", formatB: "qcow2")
    }

    @Test func emptyHugeImageMapsInOneExtent() throws {
        let dir = try TemporaryDirectory()
        try qemuImg("create", "-q", "-f", "qed", dir.file("big.qed"), "4T")
        let device = try ImageOpener.open(dir.file("big.qed"))
        #expect(try device.allExtents() == [Extent(offset: 0, length: 4 << 40, status: .absent)])
    }

    @Test func backingChainsWithZeroClustersFlatten() throws {
        let dir = try TemporaryDirectory()
        let source = try TestPattern.writeRaw(to: dir.file("src.raw"), size: 8 << 20)
        try qemuImg("convert", "-f", "raw", "-O", "qed", "-o", "cluster_size=16384", source, dir.file("base.qed"))
        try qemuImg("create", "-q", "-f", "qed", "-o", "cluster_size=4096,table_size=4", "-b", "base.qed", "-F", "qed",
                    dir.file("mid.qed"))
        // Zero clusters (aligned zero writes) hide the backing data; the rest is partial-cluster data.
        try qemuIO(dir.file("mid.qed"), "qed", ["write -z 0 8192", "write -P 0x5a 200000 70000", "write -z 3141632 65536",
                                                "write -P 0x44 7M 1M"])
        try qemuImg("create", "-q", "-f", "qed", "-b", "mid.qed", "-F", "qed", dir.file("top.qed"))
        try qemuIO(dir.file("top.qed"), "qed", ["write -P 0x77 5M 4096", "write -P 0x11 3000000 12345"])

        let mid = try ImageOpener.open(dir.file("mid.qed"))
        #expect(try mid.extent(at: 0, maxLength: 8192) == Extent(offset: 0, length: 8192, status: .zero))
        #expect(try mid.extent(at: 3_141_632, maxLength: 65536).status == .zero)
        let top = dir.file("top.qed")
        let device = try ImageOpener.open(top)
        #expect(device.info.backingFilename == "mid.qed")
        #expect(device.info.backingFormat == nil)
        #expect(device.info.backingChain.count == 2)
        #expect(try device.extent(at: 0, maxLength: 4096) == Extent(offset: 0, length: 4096, status: .zero, depth: 1))
        try expectConvertsIdentically(top, reference: top, referenceFormat: "qed", in: dir)
    }

    @Test func rawBackingFileIsNotProbed() throws {
        let dir = try TemporaryDirectory()
        try TestPattern.writeRaw(to: dir.file("base.img"), size: 4 << 20)
        try qemuImg("create", "-q", "-f", "qed", "-b", "base.img", "-F", "raw", dir.file("child.qed"))
        try qemuIO(dir.file("child.qed"), "qed", ["write -P 0x66 100000 5000", "write -z 1048576 65536"])
        let device = try ImageOpener.open(dir.file("child.qed"))
        #expect(device.info.backingFormat == "raw")
        #expect(device.info.formatSpecific["backing-is-raw"] == .bool(true))
        #expect(device.info.backingChain.first?.format == .raw)
        try expectConvertsIdentically(dir.file("child.qed"), reference: dir.file("child.qed"), referenceFormat: "qed", in: dir)

        // A "raw" backing file whose content is an image is refused rather than read either way.
        try qemuImg("create", "-q", "-f", "qcow2", dir.file("disguised.img"), "4M")
        try qemuImg("create", "-q", "-f", "qed", "-b", "disguised.img", "-F", "raw", dir.file("c2.qed"))
        let error = try #require(throws: KDCTError.self) { try ImageOpener.open(dir.file("c2.qed")) }
        #expect(error.code == .invalidFormat)
    }

    /// A copy of the file at `path` with little-endian `value` stored at `offset`.
    private func patched(_ path: String, to name: String, in dir: TemporaryDirectory, at offset: Int, _ value: UInt64) throws -> String {
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        for b in 0..<8 { bytes[offset + b] = UInt8(truncatingIfNeeded: value >> UInt64(8 * b)) }
        try writeTestFile(bytes, to: dir.file(name))
        return dir.file(name)
    }

    @Test func needCheckFlagIsReadAsIsAndNeverRepaired() throws {
        let dir = try TemporaryDirectory()
        let source = try TestPattern.writeRaw(to: dir.file("src.raw"), size: 4 << 20)
        try qemuImg("convert", "-f", "raw", "-O", "qed", source, dir.file("clean.qed"))
        let dirty = try patched(dir.file("clean.qed"), to: "dirty.qed", in: dir, at: 16, QEDHeader.featureNeedCheck)
        let before = try Data(contentsOf: URL(fileURLWithPath: dirty))
        let device = try ImageOpener.open(dirty)
        #expect(device.info.dirty)
        #expect(device.info.notes.contains { $0.contains("need-check") })
        #expect(try GuestDigest.sha256(of: device) == guestSHA256(source, format: .raw))
        try convertImage(dirty, to: dir.file("out.qcow2"), format: .qcow2)
        try expectQemuIdentical(source, dir.file("out.qcow2"), formatA: "raw", formatB: "qcow2")
        #expect(try Data(contentsOf: URL(fileURLWithPath: dirty)) == before, "the input must not be touched")
    }

    @Test func unknownFeaturesAndDamagedTablesAreErrors() throws {
        let dir = try TemporaryDirectory()
        let source = try TestPattern.writeRaw(to: dir.file("src.raw"), size: 4 << 20)
        try qemuImg("convert", "-f", "raw", "-O", "qed", "-o", "cluster_size=4096,table_size=2", source, dir.file("ok.qed"))
        let ok = dir.file("ok.qed")

        let unknown = try patched(ok, to: "unknown.qed", in: dir, at: 16, 0x10)
        let featureError = try #require(throws: KDCTError.self) { try ImageOpener.open(unknown) }
        #expect(featureError.code == .unsupported)
        #expect(featureError.message.contains("0x10"))
        #expect(throws: KDCTError.self) { try convertImage(unknown, to: dir.file("o.raw"), format: .raw) }
        #expect(!FilePaths.exists(dir.file("o.raw")))

        // Compatible and autoclear bits are ignored (and reported).
        let compat = try patched(ok, to: "compat.qed", in: dir, at: 24, 0x4)
        #expect(try ImageOpener.open(compat).info.notes.contains { $0.contains("compatible") })

        // The L1 table is at 4096; its first entry points to the first L2 table.
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: ok)))
        var l2: UInt64 = 0
        for b in 0..<8 { l2 |= UInt64(bytes[4096 + b]) << UInt64(8 * b) }
        #expect(l2 != 0)
        let l1Past = try patched(ok, to: "l1past.qed", in: dir, at: 4096, 1 << 40)
        #expect(try #require(throws: KDCTError.self) { try ImageOpener.open(l1Past) }.field == "L1 entry 0")
        let l1Unaligned = try patched(ok, to: "l1odd.qed", in: dir, at: 4096, l2 + 8)
        #expect(try #require(throws: KDCTError.self) { try ImageOpener.open(l1Unaligned) }.code == .corrupt)

        let l2Past = try patched(ok, to: "l2past.qed", in: dir, at: Int(l2), 1 << 40)
        let pastError = try #require(throws: KDCTError.self) { try ImageOpener.open(l2Past).allExtents() }
        #expect(pastError.code == .corrupt)
        #expect(pastError.message.contains("past the end of the file"))
        let reserved = try patched(ok, to: "reserved.qed", in: dir, at: Int(l2), 8192 + 3)
        let reservedError = try #require(throws: KDCTError.self) { try ImageOpener.open(reserved).readBytes(at: 0, count: 512) }
        #expect(reservedError.code == .corrupt)
        let inHeader = try patched(ok, to: "inheader.qed", in: dir, at: Int(l2), 0)
        #expect(try ImageOpener.open(inHeader).extent(at: 0, maxLength: 4096).status == .absent)

        // A truncated file: the L1 table no longer fits.
        try writeTestFile(Array(bytes.prefix(4096 + 100)), to: dir.file("short.qed"))
        #expect(try #require(throws: KDCTError.self) { try ImageOpener.open(dir.file("short.qed")) }.code == .truncated)
    }
}
