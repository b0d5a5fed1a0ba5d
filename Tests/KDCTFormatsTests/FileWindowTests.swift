import Foundation
import Testing
@testable import KDCTFormats
import KDCTTestSupport

/// `ReadOnlyFile` windows: a byte range of a file read as a whole file (tar members of an OVA).
@Suite struct FileWindowTests {
    /// A file of `count` bytes where byte i is `i % 251` (so every offset is recognisable).
    private func numberedFile(_ dir: TemporaryDirectory, count: Int) throws -> String {
        let path = dir.file("numbered.bin")
        let bytes = (0..<count).map { UInt8($0 % 251) }
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    @Test func readsAreRelativeToTheWindowAndStopAtItsEnd() throws {
        let dir = try TemporaryDirectory()
        let path = try numberedFile(dir, count: 10_000)
        let file = try ReadOnlyFile(path: path, window: FileWindow(offset: 1_000, length: 3_000, name: "member"))
        #expect(file.size == 3_000)
        #expect(file.isWindow)
        #expect(file.windowOffset == 1_000)
        #expect(file.path == path + "/member")
        #expect(file.openedPath == path)
        #expect(try file.readBytes(count: 4, at: 0) == (1_000..<1_004).map { UInt8($0 % 251) })
        #expect(try file.readBytes(count: 3, at: 2_997) == (3_997..<4_000).map { UInt8($0 % 251) })
        // A read crossing the window's end gets only what is inside; an exact read past it is `truncated`.
        var buffer = [UInt8](repeating: 0xAA, count: 10)
        let got = try buffer.withUnsafeMutableBytes { try file.readAvailable(into: $0, at: 2_995) }
        #expect(got == 5)
        #expect(Array(buffer[0..<5]) == (3_995..<4_000).map { UInt8($0 % 251) })
        #expect(try buffer.withUnsafeMutableBytes { try file.readAvailable(into: $0, at: 3_000) } == 0)
        #expect(try buffer.withUnsafeMutableBytes { try file.readAvailable(into: $0, at: UInt64.max - 3) } == 0)
        let error = #expect(throws: KDCTError.self) { try file.readBytes(count: 10, at: 2_995, what: "header") }
        #expect(error?.code == .truncated)
        #expect(error?.file == path + "/member")
    }

    @Test func windowsNestAndOutliveTheirParent() throws {
        let dir = try TemporaryDirectory()
        let path = try numberedFile(dir, count: 10_000)
        var outer: ReadOnlyFile? = try ReadOnlyFile(path: path, window: FileWindow(offset: 500, length: 5_000, name: "a"))
        let inner = try outer!.window(FileWindow(offset: 100, length: 50, name: "b"))
        outer = nil  // the inner window has its own descriptor
        #expect(inner.windowOffset == 600)
        #expect(inner.path == path + "/a/b")
        #expect(try inner.readBytes(count: 50, at: 0) == (600..<650).map { UInt8($0 % 251) })
    }

    @Test func aWindowPastTheEndOfTheFileIsTruncated() throws {
        let dir = try TemporaryDirectory()
        let path = try numberedFile(dir, count: 4_096)
        let error = #expect(throws: KDCTError.self) {
            try ReadOnlyFile(path: path, window: FileWindow(offset: 4_000, length: 97, name: "disk.vmdk"))
        }
        #expect(error?.code == .truncated)
        #expect(error?.field == "disk.vmdk")
        let overflow = #expect(throws: KDCTError.self) {
            try ReadOnlyFile(path: path, window: FileWindow(offset: UInt64.max - 1, length: 2, name: "x"))
        }
        #expect(overflow?.code == .truncated)
        // The empty window at the very end is fine.
        #expect(try ReadOnlyFile(path: path, window: FileWindow(offset: 4_096, length: 0, name: "empty")).size == 0)
    }

    @Test func holesAreReportedRelativeToTheWindow() throws {
        let dir = try TemporaryDirectory()
        let path = dir.file("sparse.bin")
        // data [0, 1 MiB), hole [1 MiB, 3 MiB), data [3 MiB, 4 MiB)
        _ = FileManager.default.createFile(atPath: path, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try handle.truncate(atOffset: 4 << 20)
        try handle.seek(toOffset: 0)
        handle.write(Data(repeating: 1, count: 1 << 20))
        try handle.seek(toOffset: 3 << 20)
        handle.write(Data(repeating: 2, count: 1 << 20))
        try handle.close()

        let whole = try ReadOnlyFile(path: path)
        guard try whole.nextHole(from: 0) == 1 << 20 else {
            print("FileWindowTests: this filesystem reports no holes; hole clipping checked only for consistency")
            return
        }
        // Window [512 KiB, 3.5 MiB): data [0, 512 KiB), hole [512 KiB, 2.5 MiB), data [2.5 MiB, 3 MiB).
        let file = try whole.window(FileWindow(offset: 512 << 10, length: 3 << 20, name: "w"))
        #expect(try file.nextData(from: 0) == 0)
        #expect(try file.nextHole(from: 0) == 512 << 10)
        #expect(try file.nextData(from: 512 << 10) == 2_560 << 10)
        #expect(try file.nextHole(from: 2_560 << 10) == 3 << 20)  // the window's end counts as a hole
        #expect(try file.nextData(from: 3 << 20) == nil)
        // A window entirely inside the hole has no data.
        let hole = try whole.window(FileWindow(offset: 1 << 20, length: 1 << 20, name: "h"))
        #expect(try hole.nextData(from: 0) == nil)
        #expect(try hole.nextHole(from: 0) == 0)
        // A window ending inside the hole: data then the hole, clipped to its length.
        let tail = try whole.window(FileWindow(offset: 0, length: 2 << 20, name: "t"))
        #expect(try tail.nextHole(from: 10) == 1 << 20)
        #expect(try tail.nextData(from: 1 << 20) == nil)
    }

    @Test func aRawImageInsideAWindowReadsTheMemberOnly() throws {
        let dir = try TemporaryDirectory()
        let member = try TestPattern.writeRaw(to: dir.file("member.img"), size: 4 << 20)
        // archive = 3 KiB of 0xEE, the member, 5 KiB of 0xEE
        let memberData = try Data(contentsOf: URL(fileURLWithPath: member))
        var archive = Data(repeating: 0xEE, count: 3_072)
        archive.append(memberData)
        archive.append(Data(repeating: 0xEE, count: 5_120))
        let archivePath = dir.file("archive.bin")
        try archive.write(to: URL(fileURLWithPath: archivePath))

        let file = try ReadOnlyFile(path: archivePath,
                                    window: FileWindow(offset: 3_072, length: UInt64(memberData.count), name: "member.img"))
        let context = OpenContext(options: OpenOptions(format: .raw), depth: 0, visited: [file.identity])
        let device = try ImageOpener.open(file: file, context: context)
        #expect(device.virtualSize == 4 << 20)
        #expect(device.info.filename == archivePath + "/member.img")
        let out = dir.file("out.raw")
        var options = ConvertOptions(outputFormat: .raw)
        options.pipeline.workers = 2
        try DiskConverter.convert(device, toFile: out, options: options)
        try expectQemuIdentical(member, out, formatA: "raw", formatB: "raw")
    }
}
