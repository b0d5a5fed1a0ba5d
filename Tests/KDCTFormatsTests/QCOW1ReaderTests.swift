import Foundation
import Testing
@testable import KDCTFormats
import KDCTTestSupport

/// Writes QCOW v1 images with any cluster and L2 size qemu accepts (qemu-img only writes 4 KiB clusters, or
/// 512 B with a backing file), with uncompressed and compressed clusters.
struct SyntheticQCOW1 {
    enum Cluster {
        case data([UInt8])
        case compressed([UInt8])
    }

    var size: UInt64
    var clusterBits: UInt8
    var l2Bits: UInt8
    var clusters: [Int: Cluster] = [:]

    var clusterSize: Int { 1 << Int(clusterBits) }

    func write(to path: String) throws {
        let l2Entries = 1 << Int(l2Bits)
        let bytesPerL2 = UInt64(clusterSize) * UInt64(l2Entries)
        let l1Entries = Int((size + bytesPerL2 - 1) / bytesPerL2)
        var file = [UInt8](QCOW1HeaderTests.headerBytes(size: size, clusterBits: clusterBits, l2Bits: l2Bits))
        file += [UInt8](repeating: 0, count: l1Entries * 8)
        func alignEnd() { file += [UInt8](repeating: 0, count: (clusterSize - file.count % clusterSize) % clusterSize) }
        var l1 = [UInt64](repeating: 0, count: l1Entries)
        var l2Tables: [Int: [UInt64]] = [:]
        let compressor = try RawDeflateCompressor()
        for index in clusters.keys.sorted() {
            guard let cluster = clusters[index] else { continue }
            let l1Index = index / l2Entries
            if l1[l1Index] == 0 {
                alignEnd()
                l1[l1Index] = UInt64(file.count)
                file += [UInt8](repeating: 0, count: l2Entries * 8)
                l2Tables[l1Index] = [UInt64](repeating: 0, count: l2Entries)
            }
            var entry: UInt64
            switch cluster {
            case let .data(bytes):
                alignEnd()
                entry = UInt64(file.count)
                file += bytes + [UInt8](repeating: 0, count: clusterSize - bytes.count)
            case let .compressed(bytes):
                let input = bytes + [UInt8](repeating: 0, count: clusterSize - bytes.count)
                var output = [UInt8](repeating: 0, count: clusterSize - 1)
                let length = try input.withUnsafeBytes { source in
                    try output.withUnsafeMutableBytes { try compressor.compress(source, into: $0) }
                }
                guard let length else { throw KDCTError(.invalidArgument, "cluster \(index) does not compress") }
                entry = 1 << 63 | UInt64(length) << (63 - UInt64(clusterBits)) | UInt64(file.count)
                file += output[0..<length]
            }
            l2Tables[l1Index]?[index % l2Entries] = entry
        }
        alignEnd()
        for (i, offset) in l1.enumerated() {
            for b in 0..<8 { file[48 + i * 8 + b] = UInt8(truncatingIfNeeded: offset >> UInt64(56 - 8 * b)) }
        }
        for (l1Index, table) in l2Tables {
            let base = Int(l1[l1Index])
            for (i, entry) in table.enumerated() {
                for b in 0..<8 { file[base + i * 8 + b] = UInt8(truncatingIfNeeded: entry >> UInt64(56 - 8 * b)) }
            }
        }
        try writeTestFile(file, to: path)
    }

    /// The guest disk the image holds.
    var guest: [UInt8] {
        var disk = [UInt8](repeating: 0, count: Int(size & ~511))
        for (index, cluster) in clusters {
            let bytes: [UInt8]
            switch cluster {
            case let .data(b), let .compressed(b): bytes = b
            }
            let start = index * clusterSize
            let count = min(bytes.count, disk.count - start)
            if count > 0 { disk.replaceSubrange(start..<(start + count), with: bytes[0..<count]) }
        }
        return disk
    }
}

/// The QCOW v1 reader against qemu-made images and chains and synthetic images of every cluster size.
@Suite struct QCOW1ReaderTests {
    @Test(arguments: [false, true])
    func qemuMadeImagesConvertIdentically(_ compressed: Bool) throws {
        let dir = try TemporaryDirectory()
        let size: UInt64 = 12 << 20 + 7 * 512
        let source = try TestPattern.writeRaw(to: dir.file("src.raw"), size: size)
        let image = dir.file(compressed ? "c.qcow" : "u.qcow")
        if compressed {
            // qemu-img 7.2 exits 1 without a message after a compressed qcow conversion (its final
            // end-of-file alignment step fails), but the image is complete: qemu's own compare is the check.
            let result = try runProcess(["qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow", source, image])
            #expect(result.status == 0 || result.stderr.isEmpty, "qemu-img convert -c: \(result.stderr)")
            try expectQemuIdentical(source, image, formatA: "raw", formatB: "qcow")
        } else {
            try qemuImg("convert", "-f", "raw", "-O", "qcow", source, image)
        }
        let device = try ImageOpener.open(image)
        #expect(device.virtualSize == size)
        #expect(device.info.format == .qcow)
        #expect(device.info.clusterSize == 4096)
        #expect(device.info.formatSpecific["l2-bits"] == .unsigned(9))
        #expect(try GuestDigest.sha256(of: device) == guestSHA256(source, format: .raw))
        let extents = try device.allExtents()
        #expect(extents.contains { $0.status == .absent })
        #expect(extents.contains { $0.status == .data && $0.compressed == compressed })
        let raw = try ImageOpener.open(source, options: OpenOptions(format: .raw))
        for (offset, count) in [(1, 10), (65_000, 3_000), (200_003, 1_000_000), (Int(size) - 3, 3)] {
            #expect(try device.readBytes(at: UInt64(offset), count: count) == raw.readBytes(at: UInt64(offset), count: count))
        }
        try expectConvertsIdentically(image, reference: source, referenceFormat: "raw", in: dir)
    }

    @Test func syntheticImagesOfEveryClusterSize() throws {
        let dir = try TemporaryDirectory()
        for (clusterBits, l2Bits) in [(UInt8(9), UInt8(6)), (12, 9), (14, 13), (16, 6), (16, 13)] {
            let clusterSize = 1 << Int(clusterBits)
            var image = SyntheticQCOW1(size: 6 << 20 + 1536, clusterBits: clusterBits, l2Bits: l2Bits)
            let clusterCount = Int(image.size) / clusterSize + 1
            for index in stride(from: 0, to: clusterCount, by: 3) {
                let bytes = TestPattern.bytes(offset: UInt64(index), length: clusterSize, kind: index % 2 == 0 ? "r" : "t")
                image.clusters[index] = index % 2 == 0 ? .data(bytes) : .compressed(bytes)
            }
            image.clusters[clusterCount - 1] = .compressed(TestPattern.bytes(offset: 7, length: 300, kind: "t"))
            let path = dir.file("s\(clusterBits)-\(l2Bits).qcow")
            try image.write(to: path)
            let raw = dir.file("s\(clusterBits)-\(l2Bits).raw")
            try writeTestFile(image.guest, to: raw)
            // qemu reads the synthetic image as the oracle, and so do we.
            try expectQemuIdentical(path, raw, formatA: "qcow", formatB: "raw")
            let device = try ImageOpener.open(path)
            #expect(device.info.clusterSize == UInt64(clusterSize))
            #expect(try GuestDigest.sha256(of: device) == guestSHA256(raw, format: .raw))
            try expectConvertsIdentically(path, reference: raw, referenceFormat: "raw", in: dir)
        }
    }

    @Test func qemuBackingChainsFlatten() throws {
        let dir = try TemporaryDirectory()
        let size: UInt64 = 8 << 20
        let source = try TestPattern.writeRaw(to: dir.file("src.raw"), size: size)
        try qemuImg("convert", "-f", "raw", "-O", "qcow", source, dir.file("base.qcow"))
        try qemuImg("create", "-q", "-f", "qcow", "-b", "base.qcow", "-F", "qcow", dir.file("mid.qcow"))
        try qemuIO(dir.file("mid.qcow"), "qcow", ["write -P 0x5a 1000000 70000", "write -P 0x33 0 512", "write -P 0x44 7M 1M"])
        try qemuImg("create", "-q", "-f", "qcow", "-b", "mid.qcow", "-F", "qcow", dir.file("top.qcow"))
        try qemuIO(dir.file("top.qcow"), "qcow", ["write -P 0x77 1003520 4096", "write -P 0x11 3000000 12345"])

        let top = dir.file("top.qcow")
        let device = try ImageOpener.open(top)
        #expect(device.info.backingFilename == "mid.qcow")
        #expect(device.info.clusterSize == 512)
        #expect(device.info.backingChain.count == 2)
        #expect(device.info.references.first?.resolvedPath == FilePaths.canonical(dir.file("mid.qcow")))
        try expectConvertsIdentically(top, reference: top, referenceFormat: "qcow", in: dir)

        // A qcow child over a raw base (the base's format is probed).
        try qemuImg("create", "-q", "-f", "qcow", "-b", "src.raw", "-F", "raw", dir.file("overraw.qcow"))
        try qemuIO(dir.file("overraw.qcow"), "qcow", ["write -P 0x21 4096 8192"])
        try expectConvertsIdentically(dir.file("overraw.qcow"), reference: dir.file("overraw.qcow"), referenceFormat: "qcow", in: dir)

        // info names the backing file without opening it.
        let info = try ImageOpener.inspect(top)
        #expect(info.references == [ImageReference(kind: .backingFile, name: "mid.qcow")])
        #expect(info.backingChain.isEmpty)
    }

    @Test func backingFilesFollowTheReferencePolicy() throws {
        let dir = try TemporaryDirectory()
        try qemuImg("create", "-q", "-f", "qcow", dir.file("base.qcow"), "4M")
        try qemuImg("create", "-q", "-f", "qcow", "-b", dir.file("base.qcow"), "-F", "qcow", dir.file("abs.qcow"))
        let absolute = try #require(throws: KDCTError.self) { try ImageOpener.open(dir.file("abs.qcow")) }
        #expect(absolute.code == .referenceRefused)
        var options = OpenOptions()
        options.referencePolicy = .any
        #expect(try ImageOpener.open(dir.file("abs.qcow"), options: options).info.backingChain.count == 1)
        try qemuImg("create", "-q", "-f", "qcow", "-b", "base.qcow", "-F", "qcow", dir.file("rel.qcow"))
        options.referencePolicy = .none
        #expect(throws: KDCTError.self) { try ImageOpener.open(dir.file("rel.qcow"), options: options) }
        try FileManager.default.removeItem(atPath: dir.file("base.qcow"))
        let missing = try #require(throws: KDCTError.self) { try ImageOpener.open(dir.file("rel.qcow")) }
        #expect(missing.code == .notFound)
    }

    @Test func corruptTablesAndClustersAreErrors() throws {
        let dir = try TemporaryDirectory()
        var image = SyntheticQCOW1(size: 1 << 20, clusterBits: 12, l2Bits: 9)
        image.clusters[0] = .data([1, 2, 3])
        image.clusters[1] = .compressed(TestPattern.bytes(offset: 0, length: 4096, kind: "t"))
        let path = dir.file("ok.qcow")
        try image.write(to: path)
        let good = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        let l2 = Int(UInt64(good[48]) << 56 | UInt64(good[49]) << 48 | UInt64(good[50]) << 40 | UInt64(good[51]) << 32
                     | UInt64(good[52]) << 24 | UInt64(good[53]) << 16 | UInt64(good[54]) << 8 | UInt64(good[55]))

        func patched(_ name: String, _ edit: (inout [UInt8]) -> Void) throws -> String {
            var bytes = good
            edit(&bytes)
            try writeTestFile(bytes, to: dir.file(name))
            return dir.file(name)
        }
        func setBE(_ bytes: inout [UInt8], _ at: Int, _ value: UInt64) {
            for b in 0..<8 { bytes[at + b] = UInt8(truncatingIfNeeded: value >> UInt64(56 - 8 * b)) }
        }
        // L2 entry past the end of the file.
        let past = try patched("past.qcow") { setBE(&$0, l2, 1 << 30) }
        let pastError = try #require(throws: KDCTError.self) { try ImageOpener.open(past).allExtents() }
        #expect(pastError.code == .corrupt)
        #expect(pastError.message.contains("past the end of the file"))
        #expect(throws: KDCTError.self) { try convertImage(past, to: dir.file("o1.raw"), format: .raw) }
        #expect(!FilePaths.exists(dir.file("o1.raw")))
        // L2 entry not aligned to the cluster size.
        let unaligned = try patched("unaligned.qcow") { setBE(&$0, l2, 4096 + 512) }
        #expect(throws: KDCTError.self) { try ImageOpener.open(unaligned).readBytes(at: 0, count: 10) }
        // L1 entry pointing past the end of the file: refused at open.
        let l1 = try patched("l1.qcow") { setBE(&$0, 48, 1 << 40) }
        let l1Error = try #require(throws: KDCTError.self) { try ImageOpener.open(l1) }
        #expect(l1Error.field == "L1 entry 0")
        // Compressed data that does not inflate to a cluster.
        let garbage = try patched("garbage.qcow") { bytes in
            for i in 0..<40 { bytes[bytes.count - 4096 + i] ^= 0xA5 }
        }
        let device = try ImageOpener.open(garbage)
        #expect(try device.readBytes(at: 0, count: 3) == [1, 2, 3])
        let inflate = try #require(throws: KDCTError.self) { try device.readBytes(at: 4096, count: 4096) }
        #expect(inflate.code == .corrupt)
        #expect(inflate.message.contains("inflate"))
        #expect(throws: KDCTError.self) { try convertImage(garbage, to: dir.file("o2.qcow2"), format: .qcow2) }
        #expect(!FilePaths.exists(dir.file("o2.qcow2")))
    }
}

/// Runs qemu-io commands on an image (the test writes a child the way a guest would).
func qemuIO(_ image: String, _ format: String, _ commands: [String],
            sourceLocation: SourceLocation = #_sourceLocation) throws {
    var arguments = ["qemu-io", "-f", format]
    for command in commands { arguments += ["-c", command] }
    arguments.append(image)
    let result = try runProcess(arguments)
    #expect(result.status == 0 && !result.stdout.contains("error"), "qemu-io \(commands): \(result.stdout) \(result.stderr)",
            sourceLocation: sourceLocation)
    if result.status != 0 { throw KDCTError(.io, "qemu-io failed: \(result.stderr)") }
}
