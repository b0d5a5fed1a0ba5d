import Foundation
import Synchronization
import Testing
@testable import KDCTFormats
import KDCTTestSupport

/// VMDKs made by qemu-img from a `TestPattern` raw disk, converted by the library to RAW and QCOW2 and checked
/// with qemu-img compare (the oracle) against the source.
@Suite struct VMDKQemuTests {
    /// Sector-aligned but not grain-aligned, so the last grain is partial (qemu compresses it short in streams).
    static let size: UInt64 = 12 << 20 + 3584

    /// Converts `image` (a VMDK) to RAW and QCOW2 and checks both against `reference` (read by qemu as
    /// `referenceFormat`) and the QCOW2 with qemu-img check.
    static func convertAndCompare(_ image: String, reference: String, referenceFormat: String, in dir: TemporaryDirectory,
                                  label: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        try expectConvertsIdentically(image, reference: reference, referenceFormat: referenceFormat, in: dir, label: label,
                                      workers: 3, sourceLocation: sourceLocation)
        let qcow2 = dir.file(label + ".out.qcow2")
        // The library's view equals qemu's view of the VMDK itself, too.
        try expectQemuIdentical(image, qcow2, formatA: "vmdk", formatB: "qcow2", sourceLocation: sourceLocation)
    }

    /// Converts `image` to RAW and QCOW2 and checks both against the raw file `expected` (for disks qemu cannot
    /// read itself: custom descriptors, ZERO extents, COWD deltas).
    static func convertAndCompareToRaw(_ image: String, expected: String, in dir: TemporaryDirectory,
                                       sourceLocation: SourceLocation = #_sourceLocation) throws {
        try convertImage(image, to: dir.file("converted.raw"), format: .raw)
        try expectQemuIdentical(expected, dir.file("converted.raw"), formatA: "raw", formatB: "raw", sourceLocation: sourceLocation)
        try convertImage(image, to: dir.file("converted.qcow2"), format: .qcow2)
        try expectQemuIdentical(expected, dir.file("converted.qcow2"), formatA: "raw", formatB: "qcow2", sourceLocation: sourceLocation)
        try expectQemuCheckClean(dir.file("converted.qcow2"), sourceLocation: sourceLocation)
        try FileManager.default.removeItem(atPath: dir.file("converted.raw"))
        try FileManager.default.removeItem(atPath: dir.file("converted.qcow2"))
    }

    @Test(arguments: ["monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse", "twoGbMaxExtentFlat", "streamOptimized"])
    func subformatConvertsIdentically(subformat: String) throws {
        let dir = try TemporaryDirectory("kdct-vmdk")
        let source = try TestPattern.writeRaw(to: dir.file("src.raw"), size: Self.size)
        let image = dir.file("\(subformat).vmdk")
        try qemuImg("convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=\(subformat)", source, image)
        let device = try ImageOpener.open(image)
        #expect(device.virtualSize == Self.size)
        #expect(device.info.subformat == subformat)
        #expect(device.info.producer?.hasPrefix("QEMU") == true)
        try Self.convertAndCompare(image, reference: source, referenceFormat: "raw", in: dir, label: subformat)
    }

    @Test func zeroedGrainImageConvertsIdentically() throws {
        let dir = try TemporaryDirectory("kdct-vmdk")
        let source = try TestPattern.writeRaw(to: dir.file("src.raw"), size: Self.size)
        let image = dir.file("zeroed.vmdk")
        try qemuImg("convert", "-f", "raw", "-O", "vmdk", "-o", "zeroed_grain=on", source, image)
        // Zero some grains explicitly: qemu writes GTE 1 (zeroed grain) for whole-grain zero writes.
        let io = try runProcess(["qemu-io", "-f", "vmdk", "-c", "write -z 0 128k", "-c", "write -z 3m 64k", image])
        #expect(io.status == 0, "qemu-io: \(io.stderr)")
        try qemuImg("convert", "-f", "vmdk", "-O", "raw", image, dir.file("expected.raw"))
        let device = try ImageOpener.open(image)
        let extents = try device.allExtents()
        #expect(extents.first == Extent(offset: 0, length: 128 << 10, status: .zero), "\(extents.prefix(3))")
        #expect(extents.contains { $0.status == .zero && $0.offset == 3 << 20 })
        #expect(device.info.formatSpecific["version"] == .unsigned(2))
        try Self.convertAndCompare(image, reference: dir.file("expected.raw"), referenceFormat: "raw", in: dir, label: "zeroed")
    }

    @Test func multiExtentSplitDisksConvertIdentically() throws {
        // Over 4 GiB, so twoGbMaxExtent* disks have three extents; sparse everywhere, so this stays small.
        let dir = try TemporaryDirectory("kdct-vmdk")
        let size: UInt64 = (4 << 30) + (300 << 20) + 512
        let source = try TestPattern.writeRaw(to: dir.file("src.raw"), size: size)
        // Data straddling the first extent boundary (qemu splits at 2 GiB).
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: source))
        try handle.seek(toOffset: (2 << 30) - 3000)
        handle.write(Data(TestPattern.bytes(offset: 1, length: 9000, kind: "r")))
        try handle.close()
        for subformat in ["twoGbMaxExtentSparse", "twoGbMaxExtentFlat"] {
            let image = dir.file("\(subformat).vmdk")
            try qemuImg("convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=\(subformat)", source, image)
            let device = try ImageOpener.open(image)
            #expect(device.info.references.filter { $0.kind == .extent }.count == 3)
            try Self.convertAndCompare(image, reference: source, referenceFormat: "raw", in: dir, label: subformat)
        }
    }

    @Test func deltaChainFlattensIdentically() throws {
        let dir = try TemporaryDirectory("kdct-vmdk")
        let source = try TestPattern.writeRaw(to: dir.file("src.raw"), size: Self.size)
        let base = dir.file("base.vmdk")
        try qemuImg("convert", "-f", "raw", "-O", "vmdk", source, base)
        let child = dir.file("child.vmdk")
        try qemuImg("create", "-f", "vmdk", "-o", "zeroed_grain=on", "-b", "base.vmdk", "-F", "vmdk", child)
        let io = try runProcess(["qemu-io", "-f", "vmdk",
                                 "-c", "write -P 0xab 1m 64k",       // whole grain over a hole of the base
                                 "-c", "write -P 0xcd 200000 3000",  // partial grain over base data (qemu copies the rest)
                                 "-c", "write -z 0 64k",             // zeroed grain hiding base data
                                 "-c", "write -P 0xef 11m 70000",    // near the end
                                 child])
        #expect(io.status == 0, "qemu-io: \(io.stderr)")
        let device = try ImageOpener.open(child)
        #expect(device is ChainedBlockDevice)
        #expect(device.info.backingFilename == "base.vmdk")
        #expect(device.info.references.contains { $0.kind == .parent && $0.opened })
        let extents = try device.allExtents()
        #expect(extents.first == Extent(offset: 0, length: 64 << 10, status: .zero), "zeroed grain must not read the parent")
        #expect(extents.contains { $0.depth == 1 && $0.status == .data }, "unallocated child grains come from the base")
        // Reference: qemu's own flattening of the chain.
        try qemuImg("convert", "-f", "vmdk", "-O", "raw", child, dir.file("expected.raw"))
        try Self.convertAndCompare(child, reference: dir.file("expected.raw"), referenceFormat: "raw", in: dir, label: "chain")
    }

    @Test func modifiedParentIsACIDMismatch() throws {
        let dir = try TemporaryDirectory("kdct-vmdk")
        try qemuImg("create", "-f", "vmdk", dir.file("base.vmdk"), "4M")
        let child = dir.file("child.vmdk")
        try qemuImg("create", "-f", "vmdk", "-b", "base.vmdk", "-F", "vmdk", child)
        // Writing to the base after the snapshot changes its CID (qemu updates it on first write).
        let io = try runProcess(["qemu-io", "-f", "vmdk", "-c", "write -P 0x11 0 64k", dir.file("base.vmdk")])
        #expect(io.status == 0, "qemu-io: \(io.stderr)")
        let error = #expect(throws: KDCTError.self) { try ImageOpener.open(child) }
        #expect(error?.code == .corrupt)
        #expect(error?.message.contains("CID") == true, "\(String(describing: error))")
        // info reports the parent without opening it, so it still works.
        let info = try ImageOpener.inspect(child)
        #expect(info.backingFilename == "base.vmdk")
        #expect(info.references == [ImageReference(kind: .parent, name: "base.vmdk")])
    }

    @Test func missingParentIsNotFound() throws {
        let dir = try TemporaryDirectory("kdct-vmdk")
        try qemuImg("create", "-f", "vmdk", dir.file("base.vmdk"), "4M")
        let child = dir.file("child.vmdk")
        try qemuImg("create", "-f", "vmdk", "-b", "base.vmdk", "-F", "vmdk", child)
        try FileManager.default.removeItem(atPath: dir.file("base.vmdk"))
        let error = #expect(throws: KDCTError.self) { try ImageOpener.open(child) }
        #expect(error?.code == .notFound)
        #expect(error?.message.contains("base.vmdk") == true)
    }

    @Test func parallelReadsOfCompressedGrainsMatchSerialReads() throws {
        let dir = try TemporaryDirectory("kdct-vmdk")
        let source = try TestPattern.writeRaw(to: dir.file("src.raw"), size: Self.size)
        let image = dir.file("stream.vmdk")
        try qemuImg("convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", source, image)
        let device = try ImageOpener.open(image)
        let expected = try [UInt8](Data(contentsOf: URL(fileURLWithPath: source)))
        // Many threads at once, each reading unaligned ranges (partial grains go through the pooled buffer) and
        // aligned whole grains (inflated straight into the caller's buffer).
        let mismatches = Mutex<[String]>([])
        DispatchQueue.concurrentPerform(iterations: 8) { worker in
            var offset = UInt64(worker) * 4099
            while offset < Self.size {
                let length = Int(min(UInt64(worker.isMultiple(of: 2) ? 65536 : 100_000 + worker), Self.size - offset))
                do {
                    let bytes = try device.readBytes(at: offset, count: length)
                    if bytes[...] != expected[Int(offset)..<(Int(offset) + length)] {
                        mismatches.withLock { $0.append("worker \(worker) offset \(offset)") }
                    }
                } catch {
                    mismatches.withLock { $0.append("worker \(worker) offset \(offset): \(error)") }
                }
                offset += UInt64(length) * 3
            }
        }
        let found = mismatches.withLock { $0 }
        #expect(found.isEmpty, "\(found.prefix(5))")
    }
}
