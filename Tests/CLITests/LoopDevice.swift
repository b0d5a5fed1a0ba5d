import Foundation
import KDCTFormats
import KDCTTestSupport
import Testing

/// A real block device for a test: a loop device over a file in a temporary directory (`losetup -f --show`),
/// detached when the value is released, whether the test passed or failed. The tests run as root (CI does).
final class LoopDevice {
    /// The backing file.
    let backingFile: String
    /// `/dev/loopN`.
    let path: String

    /// Attaches a loop device to a new file of `size` bytes in `directory`, filled with `fill` (nil: sparse zeros).
    convenience init(size: UInt64, in directory: TemporaryDirectory, name: String = "device.img", fill: UInt8? = nil) throws {
        try self.init(size: size, inFolder: directory.path, name: name, fill: fill)
    }

    /// Attaches a loop device to a new file of `size` bytes in the folder `folder`.
    init(size: UInt64, inFolder folder: String, name: String = "device.img", fill: UInt8? = nil) throws {
        backingFile = folder + "/" + name
        guard FileManager.default.createFile(atPath: backingFile, contents: nil) else {
            throw KDCTError(.io, "cannot create \(backingFile)")
        }
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: backingFile))
        try handle.truncate(atOffset: size)
        if let fill {
            // A recognisable byte with a counter in every sector, so zeroing and leftovers both show.
            var chunk = Data(repeating: fill, count: 1 << 20)
            var offset: UInt64 = 0
            try handle.seek(toOffset: 0)
            while offset < size {
                for sector in stride(from: 0, to: chunk.count, by: 512) {
                    chunk[sector] = UInt8(truncatingIfNeeded: (offset >> 9) + UInt64(sector >> 9)) | 1
                }
                let count = Int(min(UInt64(chunk.count), size - offset))
                handle.write(chunk.prefix(count))
                offset += UInt64(count)
            }
        }
        try handle.close()
        let attach = try runProcess(["losetup", "-f", "--show", backingFile])
        guard attach.status == 0 else {
            throw KDCTError(.io, "losetup failed (the loop device tests need root): \(attach.stderr)")
        }
        path = attach.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        deviceNumber = FilePaths.status(path)?.deviceNumber ?? 0
    }

    /// Which device the node names (to put the node back if a broken build replaced it).
    private let deviceNumber: UInt64

    /// Detaches the device. If the node is no longer a block device (a regression that replaces device nodes
    /// with files, issue 12 bug 1), the file is removed and the node made again first, so one failing run does
    /// not break /dev for the next.
    deinit {
        if !isBlockDevice && deviceNumber != 0 {
            FilePaths.remove(path)
            _ = mknod(path, S_IFBLK | 0o600, dev_t(deviceNumber))
        }
        _ = try? runProcess(["losetup", "-d", path])
    }

    /// The device's bytes `[offset, offset+length)`, read through the device node (tests use small devices).
    func bytes(offset: UInt64 = 0, length: UInt64) throws -> Data {
        let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        try handle.seek(toOffset: offset)
        return handle.readData(ofLength: Int(length))
    }

    /// Copies the device's first `length` bytes to a file (to compare a prefix with qemu-img).
    func copyPrefix(_ length: UInt64, to file: String) throws {
        let result = try runProcess(["dd", "if=\(path)", "of=\(file)", "bs=1M", "count=\(length)",
                                     "iflag=count_bytes", "status=none"])
        #expect(result.status == 0, "dd: \(result.stderr)")
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: file))
        try handle.truncate(atOffset: length)
        try handle.close()
    }

    /// True when the node is still a block device.
    var isBlockDevice: Bool { FilePaths.status(path)?.kind == .blockDevice }
}

