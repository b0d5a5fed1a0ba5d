import Foundation
import KDCTFormats
import KDCTTestSupport
import Testing

/// Block devices as destinations (LVM volumes, LUNs, /dev/nbdN), tested on real loop devices: written in place,
/// never replaced (issue 12, bug 1), sized before the first write, zeroed where the source has no data, and
/// checked with qemu-img reading the device.
@Suite(.serialized) struct BlockDeviceDestinationTests {
    static let sourceSize: UInt64 = 12 << 20

    /// A 12 MiB raw source with data, written zeros and holes (TestPattern).
    func makeSource(_ directory: TemporaryDirectory) throws -> String {
        try TestPattern.writeRaw(to: directory.file("source.raw"), size: Self.sourceSize)
    }

    @Test func rawOntoDeviceIsWrittenInPlaceWithItsZeroRangesZeroed() throws {
        let directory = try TemporaryDirectory("kdct-dev")
        let source = try makeSource(directory)
        // Old content everywhere: every range without source data must be zeroed.
        let device = try LoopDevice(size: Self.sourceSize, in: directory, fill: 0xA5)
        let result = try CLI.run(["convert", "-O", "raw", source, device.path])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(device.isBlockDevice)
        try expectQemuIdentical(source, device.path, formatA: "raw", formatB: "raw")
        #expect(try CLI.run(["compare", "-f", "raw", "-F", "raw", source, device.path]).status == 0)
    }

    @Test func rawOntoLargerDeviceLeavesTheBytesPastTheGuestAlone() throws {
        let directory = try TemporaryDirectory("kdct-dev")
        let source = try makeSource(directory)
        let device = try LoopDevice(size: 16 << 20, in: directory, fill: 0x5A)
        let tailBefore = try device.bytes(offset: Self.sourceSize, length: 4 << 20)
        let result = try CLI.run(["convert", source, device.path])
        #expect(result.status == 0, "\(result.stderr)")
        let prefix = directory.file("prefix.raw")
        try device.copyPrefix(Self.sourceSize, to: prefix)
        try expectQemuIdentical(source, prefix, formatA: "raw", formatB: "raw")
        #expect(try device.bytes(offset: Self.sourceSize, length: 4 << 20) == tailBefore)
    }

    @Test(arguments: [["-O", "qcow2"], ["-O", "qcow2", "-c"], ["-O", "qcow2", "-o", "cluster_size=4k"]])
    func qcow2OntoDevice(_ arguments: [String]) throws {
        let directory = try TemporaryDirectory("kdct-dev")
        let source = try makeSource(directory)
        // Old content (not zeros) under and after the image: qemu must still read it as the source.
        let device = try LoopDevice(size: 16 << 20, in: directory, fill: 0xC3)
        let result = try CLI.run(["convert"] + arguments + [source, device.path])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(device.isBlockDevice)
        try expectQemuIdentical(source, device.path, formatA: "raw", formatB: "qcow2")
        try expectQemuCheckClean(device.path)
        #expect(try CLI.run(["check", "-f", "qcow2", device.path]).status == 0)
    }

    @Test func tooSmallDeviceIsRefusedBeforeAnyWrite() throws {
        let directory = try TemporaryDirectory("kdct-dev")
        let source = try makeSource(directory)
        let device = try LoopDevice(size: 8 << 20, in: directory, fill: 0x77)
        let before = try device.bytes(length: 8 << 20)
        let raw = try CLI.run(["convert", "-O", "raw", source, device.path])
        #expect(raw.status == 1)
        #expect(raw.stderr.contains("\(8 << 20)") && raw.stderr.contains("\(Self.sourceSize)"), "\(raw.stderr)")
        #expect(raw.stderr.contains(device.path))
        #expect(try device.bytes(length: 8 << 20) == before, "the device was written before the refusal")

        // A qcow2 needs its measured size: 256 KiB holds no 12 MiB image's metadata and data.
        let tiny = try LoopDevice(size: 256 << 10, in: directory, name: "tiny.img", fill: 0x11)
        let tinyBefore = try tiny.bytes(length: 256 << 10)
        let qcow2 = try CLI.run(["convert", "-O", "qcow2", source, tiny.path])
        #expect(qcow2.status == 1)
        #expect(qcow2.stderr.contains("\(256 << 10)"), "\(qcow2.stderr)")
        #expect(try tiny.bytes(length: 256 << 10) == tinyBefore)
    }

    @Test func forceNeverReplacesTheDeviceNode() throws {
        let directory = try TemporaryDirectory("kdct-dev")
        let source = try makeSource(directory)
        let device = try LoopDevice(size: Self.sourceSize, in: directory, fill: 0x42)
        let identity = FilePaths.status(device.path)
        // Without --force: a device needs none (qemu-img does not ask either).
        let plain = try CLI.run(["convert", source, device.path])
        #expect(plain.status == 0, "\(plain.stderr)")
        let forced = try CLI.run(["convert", "--force", "-O", "raw", source, device.path])
        #expect(forced.status == 0, "\(forced.stderr)")
        #expect(device.isBlockDevice, "--force replaced the device node")
        #expect(FilePaths.status(device.path) == identity)
        try expectQemuIdentical(source, device.path, formatA: "raw", formatB: "raw")
        // And the data went to the device, not to a file in /dev: the backing file holds it.
        try expectQemuIdentical(source, device.backingFile, formatA: "raw", formatB: "raw")
    }

    @Test func symlinkToDeviceWritesTheDeviceAndKeepsTheLink() throws {
        let directory = try TemporaryDirectory("kdct-dev")
        let source = try makeSource(directory)
        let device = try LoopDevice(size: 16 << 20, in: directory, fill: 0x99)
        let link = directory.file("vm-disk")
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: device.path)
        let result = try CLI.run(["convert", "-O", "qcow2", source, link])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(FilePaths.status(link)?.kind == .symbolicLink)
        #expect(FilePaths.readLink(link) == device.path)
        #expect(device.isBlockDevice)
        try expectQemuIdentical(source, device.path, formatA: "raw", formatB: "qcow2")
        try expectQemuCheckClean(device.path)
    }

    @Test func writeIntoAnExistingRawDevice() throws {
        let directory = try TemporaryDirectory("kdct-dev")
        let source = try makeSource(directory)
        let device = try LoopDevice(size: Self.sourceSize, in: directory, fill: 0xEE)
        let result = try CLI.run(["convert", "-n", "-O", "raw", source, device.path])
        #expect(result.status == 0, "\(result.stderr)")
        try expectQemuIdentical(source, device.path, formatA: "raw", formatB: "raw")
    }

    @Test func writeIntoAnExistingQCOW2OnADevice() throws {
        let directory = try TemporaryDirectory("kdct-dev")
        let source = try makeSource(directory)
        let device = try LoopDevice(size: 24 << 20, in: directory, fill: 0x3C)
        // As oVirt: a qcow2 created on the device, then converted into (-n; the format is the device's).
        try qemuImg("create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", device.path, "16M")
        let result = try CLI.run(["convert", "-n", source, device.path])
        #expect(result.status == 0, "\(result.stderr)")
        try expectQemuIdentical(source, device.path, formatA: "raw", formatB: "qcow2")
        try expectQemuCheckClean(device.path)
        let info = try qemuImg("info", "--output", "json", "-f", "qcow2", device.path)
        let json = try JSONSerialization.jsonObject(with: Data(info.stdout.utf8)) as? [String: Any]
        #expect(json?["virtual-size"] as? Int == 16 << 20, "the existing image's virtual size is kept")
        #expect(json?["cluster-size"] as? Int == 4096, "the existing image's cluster size is kept")

        // Smaller than the source: refused, the existing image untouched.
        try qemuImg("create", "-q", "-f", "qcow2", device.path, "4M")
        let before = try device.bytes(length: 1 << 20)
        let small = try CLI.run(["convert", "-n", "-O", "qcow2", source, device.path])
        #expect(small.status == 1)
        #expect(small.stderr.contains("\(4 << 20)") && small.stderr.contains("\(Self.sourceSize)"), "\(small.stderr)")
        #expect(try device.bytes(length: 1 << 20) == before)
    }

    @Test func targetIsZeroSkipsZeroing() throws {
        let directory = try TemporaryDirectory("kdct-dev")
        let source = try makeSource(directory)
        // A device that reads as zeros (sparse backing file): --target-is-zero is true, the result is exact.
        let blank = try LoopDevice(size: Self.sourceSize, in: directory, name: "blank.img")
        let exact = try CLI.run(["convert", "-n", "--target-is-zero", "-O", "raw", source, blank.path])
        #expect(exact.status == 0, "\(exact.stderr)")
        try expectQemuIdentical(source, blank.path, formatA: "raw", formatB: "raw")
        // On a device with old content the flag is a lie: the ranges without data keep the old bytes, which
        // shows the zeroing was skipped.
        let dirty = try LoopDevice(size: Self.sourceSize, in: directory, name: "dirty.img", fill: 0x66)
        let skipped = try CLI.run(["convert", "-n", "--target-is-zero", "-O", "raw", source, dirty.path])
        #expect(skipped.status == 0, "\(skipped.stderr)")
        let compare = try runProcess(["qemu-img", "compare", "-f", "raw", "-F", "raw", source, dirty.path])
        #expect(compare.status == 1, "zero ranges were written although --target-is-zero was given")
    }

    /// Where neither the device nor the file system can deallocate (a loop device over a file on ramfs, which has
    /// no fallocate: the device then has no write-zeroes command either), zero ranges are read and zeroed only
    /// where they are not zeros already: the device and an existing raw file written into (`-n`) still end up
    /// identical to the source.
    @Test func zeroingFallsBackWhereNothingCanBeDeallocated() throws {
        let directory = try TemporaryDirectory("kdct-dev")
        let source = try makeSource(directory)
        let mountPoint = directory.file("ramfs")
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: false)
        let mount = try runProcess(["mount", "-t", "ramfs", "ramfs", mountPoint])
        #expect(mount.status == 0, "mount ramfs (needs root): \(mount.stderr)")
        guard mount.status == 0 else { return }
        defer {
            if (try? runProcess(["umount", mountPoint]))?.status != 0 { _ = try? runProcess(["umount", "-l", mountPoint]) }
        }
        // The loop device over the ramfs file is detached (by `convertOnto` returning) before the unmount.
        try convertOnto(folder: mountPoint, source: source)
    }

    private func convertOnto(folder: String, source: String) throws {
        let device = try LoopDevice(size: Self.sourceSize, inFolder: folder, fill: 0xB7)
        let result = try CLI.run(["convert", "-O", "raw", source, device.path])
        #expect(result.status == 0, "\(result.stderr)")
        try expectQemuIdentical(source, device.path, formatA: "raw", formatB: "raw")

        let existing = folder + "/existing.raw"
        try Data(repeating: 0xB8, count: Int(Self.sourceSize)).write(to: URL(fileURLWithPath: existing))
        let into = try CLI.run(["convert", "-n", "-O", "raw", source, existing])
        #expect(into.status == 0, "\(into.stderr)")
        try expectQemuIdentical(source, existing, formatA: "raw", formatB: "raw")
    }
}
