#if canImport(Glibc)
import Glibc
#endif
import KDCTFormats

/// The body shared by every harness: the input bytes become a file (a memfd, reached as `/proc/self/fd/N`), which
/// is opened as an image of one format three ways — strict mode (`untrusted`), default mode with references refused
/// (`referencePolicy = .none`), and `info` (references reported, not opened) — and each opened device is walked
/// extent by extent and read.
///
/// Invariants checked (a violation traps, so libFuzzer records it as a crash):
/// - opening and reading fail only with `KDCTError`, never another error type;
/// - every extent starts at the offset asked for, is non-empty, and does not run past the range asked for;
/// - a `.zero` or `.absent` extent reads as zeros (no chain exists with references refused);
/// - ASan: no out-of-bounds access, use-after-free or leak; libFuzzer: no input runs longer than `-timeout` and no
///   allocation above `-malloc_limit_mb`.
///
/// Work per input is bounded so that a legitimately huge (multi-TiB, sparse) image is not a "hang": at most
/// `maxGuestBytesRead` guest bytes are read and `maxExtents` extents walked per open. The budget is small because
/// every input is opened three ways and executions per second are what finds bugs; the first bytes of every
/// extent are read whatever its size, so each mapping path is exercised.
public enum ImageFuzzer {
    /// Guest bytes read per opened device, at most (8 MiB).
    public static let maxGuestBytesRead: UInt64 = 8 << 20
    /// Extents walked per opened device, at most.
    public static let maxExtents = 4096
    /// Bytes read from the start of each extent even when the budget is spent.
    static let probeBytes: UInt64 = 4096
    /// Largest single read.
    static let chunk = 1 << 20

    nonisolated(unsafe) private static var descriptor: Int32 = -1
    nonisolated(unsafe) static var path = ""

    /// Largest file a sparse input may describe (64 MiB).
    public static let maxSparseFileSize = 64 << 20

    /// Runs one input; returns 0 (libFuzzer's convention). With `sparse`, the input is not the file itself but a
    /// description of a sparse file (see `writeSparseInput`), so formats whose smallest valid file is megabytes
    /// of mostly zeros (VHDX: 1 MiB-aligned regions) are fuzzed with inputs of a few KiB.
    public static func run(format: ImageFormat, data: UnsafePointer<UInt8>?, size: Int, sparse: Bool = false) -> Int32 {
        guard let data else { return 0 }
        if sparse {
            writeSparseInput(UnsafeRawBufferPointer(start: data, count: size))
        } else {
            writeInput(UnsafeRawBufferPointer(start: data, count: size))
        }

        var strict = OpenOptions(format: format)
        strict.untrusted = true
        exercise(strict)

        var noReferences = OpenOptions(format: format)
        noReferences.referencePolicy = .none
        exercise(noReferences)

        var inspect = OpenOptions(format: format)
        inspect.referencePolicy = .none
        inspect.openReferences = false
        exercise(inspect)

        if format == .qcow2 {
            // `check` reads every table of a qcow2 image, including snapshot and refcount structures.
            do {
                _ = try QCOW2Checker.check(path: path, limits: ImageLimits())
            } catch is KDCTError {
            } catch {
                fatalError("check threw a non-KDCTError: \(error)")
            }
        }
        return 0
    }

    /// Puts the input into the backing memfd (created once per process).
    static func writeInput(_ bytes: UnsafeRawBufferPointer) {
        if descriptor < 0 {
            descriptor = makeMemoryFile()
            path = "/proc/self/fd/\(descriptor)"
        }
        guard ftruncate(descriptor, 0) == 0 else { fatalError("ftruncate failed: \(errno)") }
        var done = 0
        while done < bytes.count {
            let n = pwrite(descriptor, bytes.baseAddress! + done, bytes.count - done, off_t(done))
            if n < 0 { if errno == EINTR { continue }; fatalError("pwrite failed: \(errno)") }
            done += n
        }
    }

    /// Builds the file from a sparse description: a little-endian u32 file size (capped at `maxSparseFileSize`),
    /// then records of a u32 offset, a u16 length and that many bytes, written at the offset (clipped to the file
    /// size); everything else is a hole. `Fuzz/make-seeds.sh` turns real images into this form.
    static func writeSparseInput(_ input: UnsafeRawBufferPointer) {
        writeInput(UnsafeRawBufferPointer(start: nil, count: 0))
        guard input.count >= 4 else { return }
        func u32(_ at: Int) -> Int { Int(input.loadUnaligned(fromByteOffset: at, as: UInt32.self).littleEndian) }
        let fileSize = min(u32(0), maxSparseFileSize)
        guard ftruncate(descriptor, off_t(fileSize)) == 0 else { fatalError("ftruncate failed: \(errno)") }
        var at = 4
        while at + 6 <= input.count {
            let offset = u32(at)
            let length = Int(input.loadUnaligned(fromByteOffset: at + 4, as: UInt16.self).littleEndian)
            at += 6
            let count = min(length, input.count - at, max(0, fileSize - offset))
            if count > 0, offset < fileSize {
                _ = pwrite(descriptor, input.baseAddress! + at, count, off_t(offset))
            }
            at += length
        }
    }

    /// A memfd (glibc's `memfd_create`, looked up at run time: Swift's Glibc module does not import it), or a file
    /// under /dev/shm unlinked at once.
    private static func makeMemoryFile() -> Int32 {
        typealias MemfdCreate = @convention(c) (UnsafePointer<CChar>, UInt32) -> Int32
        if let symbol = dlsym(nil, "memfd_create") {
            let create = unsafeBitCast(symbol, to: MemfdCreate.self)
            let fd = create("kdct-fuzz", 1 /* MFD_CLOEXEC */)
            if fd >= 0 { return fd }
        }
        let name = "/dev/shm/kdct-fuzz-\(getpid())"
        let fd = open(name, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { fatalError("cannot create \(name): \(errno)") }
        unlink(name)
        return fd
    }

    private static func exercise(_ options: OpenOptions) {
        let device: any BlockDevice
        do {
            device = try ImageOpener.open(path, options: options)
        } catch is KDCTError {
            return
        } catch {
            fatalError("open threw a non-KDCTError: \(error)")
        }
        // Describing the image must not fail or trap.
        _ = device.info.infoValue.jsonText()
        do {
            try walk(device)
        } catch is KDCTError {
            return
        } catch {
            fatalError("walk threw a non-KDCTError: \(error)")
        }
    }

    /// True when every byte of `bytes` is zero (compared word-wise against a zero page).
    private static func isZero(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let count = min(zeroPage.count, bytes.count - offset)
            if memcmp(bytes.baseAddress! + offset, zeroPage.baseAddress!, count) != 0 { return false }
            offset += count
        }
        return true
    }

    nonisolated(unsafe) private static let zeroPage: UnsafeMutableRawBufferPointer = {
        let page = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 64)
        page.initializeMemory(as: UInt8.self, repeating: 0)
        return page
    }()

    /// Walks extents from 0 and reads them (data fully, zero/absent checked to read as zeros), within the budgets.
    static func walk(_ device: any BlockDevice) throws {
        let size = device.virtualSize
        var offset: UInt64 = 0
        var budget = maxGuestBytesRead
        var extents = 0
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 64)
        defer { buffer.deallocate() }
        while offset < size, extents < maxExtents {
            let asked = size - offset
            let extent = try device.extent(at: offset, maxLength: asked)
            extents += 1
            if extent.offset != offset || extent.length == 0 || extent.length > asked {
                fatalError("invalid extent \(extent) for offset \(offset), maxLength \(asked)")
            }
            // Read the start of every extent, and all of it while the budget lasts.
            var position = extent.offset
            let end = extent.end
            repeat {
                let allowance = max(budget, probeBytes)
                let count = Int(min(UInt64(chunk), end - position, allowance))
                let slice = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count])
                try device.read(into: slice, at: position)
                if extent.status != .data, !isZero(UnsafeRawBufferPointer(slice)) {
                    fatalError("extent \(extent) is \(extent.status) but reads non-zero bytes at \(position)")
                }
                budget -= min(budget, UInt64(count))
                position += UInt64(count)
            } while position < end && budget > 0
            offset = end
        }
        // An unaligned read across the end of the disk, and one past it (must be refused, not trap).
        if size > 0 {
            let tail = Int(min(size, 4097))
            let slice = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<tail])
            try device.read(into: slice, at: size - UInt64(tail))
        }
        do {
            try device.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<2]), at: size &- 1)
        } catch let error as KDCTError where error.code == .invalidArgument {
        }
    }
}
