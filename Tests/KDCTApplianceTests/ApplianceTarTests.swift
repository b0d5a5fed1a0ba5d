import Foundation
import Testing
@testable import KDCTAppliance
import KDCTFormats
import KDCTTestSupport

/// Builds tar archives byte by byte for tests that need what archivers cannot make cheaply: members over 8 GiB
/// whose data is a hole (the archive stays sparse), each size encoding, damaged headers.
struct TarBuilder {
    /// How a member's size is written.
    enum SizeEncoding { case octal, base256, pax }
    /// How names over 100 bytes are written.
    enum LongNames { case gnu, pax }

    let path: String
    private let handle: FileHandle
    private(set) var offset: UInt64 = 0

    init(path: String) throws {
        self.path = path
        _ = FileManager.default.createFile(atPath: path, contents: nil)
        handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
    }

    /// A 512-byte header block.
    static func header(name: String, size: UInt64, typeflag: UInt8 = UInt8(ascii: "0"), encoding: SizeEncoding = .octal,
                       gnuMagic: Bool = false) -> [UInt8] {
        var block = [UInt8](repeating: 0, count: 512)
        func put(_ text: String, at offset: Int, max: Int) {
            for (index, byte) in text.utf8.prefix(max).enumerated() { block[offset + index] = byte }
        }
        func octal(_ value: UInt64, width: Int) -> String {
            let digits = String(value, radix: 8)
            return String(repeating: "0", count: max(0, width - 1 - digits.count)) + digits
        }
        put(name, at: 0, max: 100)
        put(octal(0o644, width: 8), at: 100, max: 8)
        put(octal(0, width: 8), at: 108, max: 8)
        put(octal(0, width: 8), at: 116, max: 8)
        switch encoding {
        case .octal, .pax:
            put(octal(encoding == .pax && size >= 0o77777777777 ? 0 : size, width: 12), at: 124, max: 12)
        case .base256:
            block[124] = 0x80
            for index in 0..<8 { block[135 - index] = UInt8(truncatingIfNeeded: size >> (8 * UInt64(index))) }
        }
        put(octal(1_700_000_000, width: 12), at: 136, max: 12)
        block[156] = typeflag
        if gnuMagic {
            put("ustar  ", at: 257, max: 8)
        } else {
            put("ustar", at: 257, max: 6)
            put("00", at: 263, max: 2)
        }
        put("root", at: 265, max: 32)
        put("root", at: 297, max: 32)
        for index in 148..<156 { block[index] = UInt8(ascii: " ") }
        let sum = block.reduce(0) { $0 + Int($1) }
        put(octal(UInt64(sum), width: 7), at: 148, max: 7)
        block[155] = UInt8(ascii: " ")
        return block
    }

    static func paxRecords(_ records: [(String, String)]) -> [UInt8] {
        var out: [UInt8] = []
        for (key, value) in records {
            let body = " \(key)=\(value)\n"
            var length = body.utf8.count + 1
            while String(length).utf8.count + body.utf8.count != length { length = String(length).utf8.count + body.utf8.count }
            out += Array("\(length)\(body)".utf8)
        }
        return out
    }

    private mutating func write(_ bytes: [UInt8]) {
        handle.seek(toFileOffset: offset)
        handle.write(Data(bytes))
        offset += UInt64(bytes.count)
    }

    private mutating func pad() {
        let remainder = offset % 512
        if remainder != 0 { write([UInt8](repeating: 0, count: Int(512 - remainder))) }
    }

    /// Headers for `name` of `size` bytes (plus the pax or GNU long-name headers it needs).
    mutating func writeHeaders(name: String, size: UInt64, encoding: SizeEncoding, longNames: LongNames) {
        var records: [(String, String)] = []
        var shortName = name
        if name.utf8.count > 100 {
            switch longNames {
            case .gnu:
                let data = Array(name.utf8) + [0]
                write(Self.header(name: "././@LongLink", size: UInt64(data.count), typeflag: UInt8(ascii: "L"), gnuMagic: true))
                write(data)
                pad()
            case .pax:
                records.append(("path", name))
            }
            shortName = String(name.suffix(90))
        }
        if encoding == .pax { records.append(("size", String(size))) }
        if !records.isEmpty {
            let data = Self.paxRecords(records)
            write(Self.header(name: "PaxHeaders/\(shortName.suffix(80))", size: UInt64(data.count), typeflag: UInt8(ascii: "x")))
            write(data)
            pad()
        }
        write(Self.header(name: shortName, size: size, encoding: encoding, gnuMagic: encoding == .base256))
    }

    /// A member holding `data`.
    mutating func addFile(name: String, data: [UInt8], encoding: SizeEncoding = .octal, longNames: LongNames = .pax) {
        writeHeaders(name: name, size: UInt64(data.count), encoding: encoding, longNames: longNames)
        write(data)
        pad()
    }

    /// A member of `size` bytes whose data is left as a hole except for `writes` (offsets within the member).
    /// Returns the member's data offset in the archive.
    @discardableResult
    mutating func addSparseFile(name: String, size: UInt64, writes: [(UInt64, [UInt8])], encoding: SizeEncoding) throws -> UInt64 {
        writeHeaders(name: name, size: size, encoding: encoding, longNames: .pax)
        let start = offset
        for (at, bytes) in writes {
            handle.seek(toFileOffset: start + at)
            handle.write(Data(bytes))
        }
        offset = start + size
        try handle.truncate(atOffset: offset)
        pad()
        return start
    }

    /// Two zero blocks, then closes the file.
    mutating func finish(endBlocks: Int = 2) throws {
        write([UInt8](repeating: 0, count: 512 * endBlocks))
        try handle.truncate(atOffset: offset)
        try handle.close()
    }
}

/// The tar layer: header decoding from bytes, archives from GNU tar, and archives built here.
@Suite struct ApplianceTarTests {
    // MARK: Header decoding

    @Test func ustarHeaderDecodes() throws {
        let block = TarBuilder.header(name: "vm.ovf", size: 5005)
        let header = try TarHeader.decode(block, at: 0)
        #expect(header.name == "vm.ovf")
        #expect(header.size == 5005)
        #expect(header.kind == .regular)
        #expect(header.dialect == .ustar)
    }

    @Test func base256SizeDecodes() throws {
        let size: UInt64 = (9 << 30) + 12_345
        let header = try TarHeader.decode(TarBuilder.header(name: "big.raw", size: size, encoding: .base256, gnuMagic: true), at: 0)
        #expect(header.size == size)
        #expect(header.dialect == .gnu)
        // The largest value that fits in 64 bits, and one that does not.
        var field = [UInt8](repeating: 0xFF, count: 12)
        field[0] = 0x80
        for index in 1..<4 { field[index] = 0 }
        #expect(try TarHeader.number(field, 0, 12, field: "size") == UInt64.max)
        field[3] = 1
        #expect(throws: KDCTError.self) { try TarHeader.number(field, 0, 12, field: "size") }
        // Negative base-256 (0xFF lead) is refused.
        #expect(throws: KDCTError.self) { try TarHeader.number([0xFF] + [UInt8](repeating: 0xFF, count: 11), 0, 12, field: "size") }
    }

    @Test func octalFieldsAcceptTheirVariantsAndRefuseGarbage() throws {
        func number(_ text: String) throws -> UInt64 {
            var field = Array(text.utf8)
            field += [UInt8](repeating: 0, count: max(0, 12 - field.count))
            return try TarHeader.number(field, 0, 12, field: "size")
        }
        #expect(try number("00000001750 ") == 1000)
        #expect(try number("   1750") == 1000)
        #expect(try number("1750 \0") == 1000)
        #expect(try number("") == 0)
        #expect(throws: KDCTError.self) { try number("00000001758") }
        #expect(throws: KDCTError.self) { try number("12 34") }
        #expect(throws: KDCTError.self) { try number("0x10") }
        #expect(throws: KDCTError.self) { try TarHeader.number([UInt8](repeating: 0x37, count: 24), 0, 24, field: "x") }
    }

    @Test func checksumIsChecked() throws {
        var block = TarBuilder.header(name: "disk.vmdk", size: 1)
        block[0] ^= 0x01
        let error = #expect(throws: KDCTError.self) { try TarHeader.decode(block, at: 4096, file: "x.ova") }
        #expect(error?.code == .corrupt)
        #expect(error?.field == "chksum")
        #expect(error?.message.contains("4096") == true)
        // Old archivers summed signed bytes: a name with bytes >= 0x80 and a signed sum is accepted.
        var signed = TarBuilder.header(name: "caf\u{e9}.ovf", size: 1)
        for index in 148..<156 { signed[index] = UInt8(ascii: " ") }
        let sum = signed.reduce(0) { $0 + Int(Int8(bitPattern: $1)) }
        let text = Array(String(sum, radix: 8).utf8)
        for index in 148..<156 { signed[index] = 0 }
        for (index, byte) in text.enumerated() { signed[148 + index] = byte }
        #expect(try TarHeader.decode(signed, at: 0).name == "caf\u{e9}.ovf")
        // Not a tar header at all.
        #expect((try? TarHeader.decode([UInt8](repeating: 0x41, count: 512), at: 0)) == nil)
        #expect(throws: KDCTError.self) { try TarHeader.decode([UInt8](repeating: 0, count: 100), at: 0) }
    }

    @Test func paxRecordsDecodeAndRefuseMalformedOnes() throws {
        let good = TarBuilder.paxRecords([("path", "a/very/long/name.vmdk"), ("size", "8589934593"), ("comment", "x=y")])
        let records = try PaxRecords.decode(good)
        #expect(records.map(\.0) == ["path", "size", "comment"])
        #expect(records[1].1 == "8589934593")
        #expect(records[2].1 == "x=y")
        #expect(try PaxRecords.decode(good + [0, 0, 0]).count == 3, "NUL padding after the records is tolerated")
        for hostile in ["99 path=x\n", "8 path=x\n", "12 path=abc\r", "10 pathabc\n", "x path=a\n", "0 \n",
                        "99999999999999999999999 a=b\n", "6 =ab\n"] {
            #expect(throws: KDCTError.self, "\(hostile)") { try PaxRecords.decode(Array(hostile.utf8)) }
        }
    }

    // MARK: Archives made by GNU tar

    @Test(arguments: ["ustar", "gnu", "pax", "v7"])
    func gnuTarArchivesList(format: String) throws {
        let dir = try TemporaryDirectory()
        let content = dir.file("content")
        try FileManager.default.createDirectory(atPath: content, withIntermediateDirectories: true)
        let longName = format == "v7" || format == "ustar" ? "short.bin" : String(repeating: "long-member-name-", count: 8) + "disk1.raw"
        var files: [(String, [UInt8])] = [
            ("vm.ovf", Array("<Envelope/>".utf8)),
            ("empty.mf", []),
            (longName, TestPattern.bytes(offset: 7, length: 70_001, kind: "r")),
            ("exactly512.bin", TestPattern.bytes(offset: 9, length: 512, kind: "t")),
        ]
        if format == "ustar" {
            files.append(("sub/dir/" + String(repeating: "p", count: 90) + "/name-in-prefix.bin", [1, 2, 3]))
            try FileManager.default.createDirectory(atPath: content + "/sub/dir/" + String(repeating: "p", count: 90),
                                                    withIntermediateDirectories: true)
        }
        for (name, bytes) in files { try Data(bytes).write(to: URL(fileURLWithPath: content + "/" + name)) }
        let archive = dir.file("a.ova")
        let result = try runProcess(["tar", "--format=\(format)", "-cf", archive, "-C", content] + files.map(\.0))
        #expect(result.status == 0, "\(result.stderr)")
        let tar = try TarArchive(path: archive)
        #expect(tar.members.map(\.name) == files.map(\.0))
        for (name, bytes) in files {
            let member = try #require(tar.member(named: name))
            #expect(member.size == UInt64(bytes.count))
            let file = try tar.open(member)
            #expect(try file.readBytes(count: bytes.count, at: 0) == bytes, "\(format): \(name)")
            #expect(file.path == archive + "/" + name)
        }
        #expect(tar.member(named: "./vm.ovf") != nil)
        #expect(tar.member(named: "missing") == nil)
        #expect(tar.notes.isEmpty)
    }

    // MARK: Members over 8 GiB

    @Test(arguments: [TarBuilder.SizeEncoding.pax, .base256])
    func memberOver8GiBIsFound(encoding: TarBuilder.SizeEncoding) throws {
        let dir = try TemporaryDirectory()
        let path = dir.file("big.ova")
        var builder = try TarBuilder(path: path)
        let size: UInt64 = (8 << 30) + 3 * 4096 + 123
        builder.addFile(name: "first.txt", data: Array("hello".utf8))
        let tail = TestPattern.bytes(offset: size, length: 4000, kind: "r")
        let start = try builder.addSparseFile(name: "disk.raw", size: size,
                                              writes: [(0, [0xAB]), (size - 4000, tail)], encoding: encoding)
        builder.addFile(name: "after.txt", data: Array("after the big one".utf8))
        try builder.finish()

        let tar = try TarArchive(path: path)
        #expect(tar.members.map(\.name) == ["first.txt", "disk.raw", "after.txt"])
        let member = try #require(tar.member(named: "disk.raw"))
        #expect(member.size == size)
        #expect(member.dataOffset == start)
        let file = try tar.open(member)
        #expect(try file.readBytes(count: 1, at: 0) == [0xAB])
        #expect(try file.readBytes(count: 4000, at: size - 4000) == tail)
        let after = try tar.open(try #require(tar.member(named: "after.txt")))
        #expect(try after.readBytes(count: Int(after.size), at: 0) == Array("after the big one".utf8))

        // An independent reader agrees on names, sizes and data offsets.
        let python = try runProcess(["python3", "-c", """
            import tarfile, sys
            for m in tarfile.open(sys.argv[1]):
                print(m.name, m.size, m.offset_data)
            """, path])
        #expect(python.status == 0, "\(python.stderr)")
        let expected = tar.members.map { "\($0.name) \($0.size) \($0.dataOffset)" }.joined(separator: "\n") + "\n"
        #expect(python.stdout == expected)
    }

    // MARK: Damaged archives

    @Test func damagedArchivesFailClearly() throws {
        let dir = try TemporaryDirectory()
        func build(_ name: String, _ body: (inout TarBuilder) throws -> Void) throws -> String {
            var builder = try TarBuilder(path: dir.file(name))
            try body(&builder)
            return dir.file(name)
        }
        func kind(_ path: String) -> KDCTError.Code? {
            do { _ = try TarArchive(path: path); return nil } catch let error as KDCTError { return error.code } catch { return nil }
        }
        // A member that runs past the end of the file.
        let cut = try build("cut.ova") { builder in
            builder.addFile(name: "a.bin", data: [UInt8](repeating: 7, count: 5000))
            try builder.finish()
        }
        try FileHandle(forWritingTo: URL(fileURLWithPath: cut)).truncate(atOffset: 2048)
        #expect(kind(cut) == .truncated)
        // A header cut in half.
        let half = try build("half.ova") { builder in
            builder.addFile(name: "a.bin", data: [1])
            try builder.finish(endBlocks: 0)
        }
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: half))
        handle.seekToEndOfFile()
        handle.write(Data(TarBuilder.header(name: "b.bin", size: 1).prefix(200)))
        try handle.close()
        #expect(kind(half) == .truncated)
        // A damaged second header.
        let damaged = try build("damaged.ova") { builder in
            builder.addFile(name: "a.bin", data: [1])
            builder.addFile(name: "b.bin", data: [2])
            try builder.finish()
        }
        let update = try FileHandle(forUpdating: URL(fileURLWithPath: damaged))
        update.seek(toFileOffset: 1024 + 10)
        update.write(Data([0x58]))
        try update.close()
        #expect(kind(damaged) == .corrupt)
        // Not a tar at all; empty.
        let text = dir.file("text.ova")
        try Data(repeating: 0x41, count: 2048).write(to: URL(fileURLWithPath: text))
        #expect(kind(text) == .invalidFormat)
        let empty = dir.file("empty.ova")
        try Data().write(to: URL(fileURLWithPath: empty))
        #expect(kind(empty) == .invalidFormat)
        // The same name twice is ambiguous.
        let twice = try build("twice.ova") { builder in
            builder.addFile(name: "disk.vmdk", data: [1])
            builder.addFile(name: "./disk.vmdk", data: [2])
            try builder.finish()
        }
        #expect(kind(twice) == .corrupt)
        // GNU sparse members (type 'S') and pax GNU.sparse records are refused.
        let sparse = try build("sparse.ova") { builder in
            var header = TarBuilder.header(name: "disk.raw", size: 0, typeflag: UInt8(ascii: "S"), gnuMagic: true)
            header[148..<156] = ArraySlice(repeating: UInt8(ascii: " "), count: 8)
            let sum = Array(String(header.reduce(0) { $0 + Int($1) }, radix: 8).utf8)
            header[148..<156] = ArraySlice(repeating: 0, count: 8)
            for (index, byte) in sum.enumerated() { header[148 + index] = byte }
            builder.addFile(name: "x", data: [])
            try builder.finish()
            let h = try FileHandle(forUpdating: URL(fileURLWithPath: dir.file("sparse.ova")))
            h.seek(toFileOffset: 0)
            h.write(Data(header))
            try h.close()
        }
        #expect(kind(sparse) == .unsupported)
        // Missing end-of-archive blocks: read, with a note.
        let open = try build("open.ova") { builder in
            builder.addFile(name: "a.bin", data: [1, 2, 3])
            try builder.finish(endBlocks: 0)
        }
        let tar = try TarArchive(path: open)
        #expect(tar.members.count == 1)
        #expect(tar.notes.contains { $0.contains("end-of-archive") })
        // An extended header past the metadata limit.
        let bigPax = try build("bigpax.ova") { builder in
            builder.addFile(name: "PaxHeaders/x", data: [])
            try builder.finish()
            let h = try FileHandle(forUpdating: URL(fileURLWithPath: dir.file("bigpax.ova")))
            h.seek(toFileOffset: 0)
            h.write(Data(TarBuilder.header(name: "PaxHeaders/x", size: 2 << 20, typeflag: UInt8(ascii: "x"))))
            h.truncateFile(atOffset: 512 + (2 << 20) + 1024)
            try h.close()
        }
        #expect(kind(bigPax) == .limitExceeded)
    }
}
