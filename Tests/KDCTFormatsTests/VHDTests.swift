import Crypto
import Foundation
import Testing
@testable import KDCTFormats
import KDCTTestSupport

/// Helpers shared by the VHD and VHDX tests.
enum VHDFamilyTest {
    /// Opens `path` expecting a `KDCTError` of `kind` whose message contains every string of `mentions`; returns it.
    @discardableResult
    static func expectOpenError(_ path: String, _ kind: KDCTError.Code, mentions: [String] = [],
                         options: OpenOptions = OpenOptions(), readAll: Bool = false,
                         sourceLocation: SourceLocation = #_sourceLocation) -> KDCTError? {
        do {
            let device = try ImageOpener.open(path, options: options)
            if readAll { _ = try GuestDigest.sha256(of: device) }
            Issue.record("\(path) opened, expected a \(kind) error", sourceLocation: sourceLocation)
            return nil
        } catch let error as KDCTError {
            #expect(error.code == kind, "\(error)", sourceLocation: sourceLocation)
            for text in mentions {
                #expect(error.description.contains(text), "\(error) does not mention \(text)", sourceLocation: sourceLocation)
            }
            return error
        } catch {
            Issue.record("unexpected error \(error)", sourceLocation: sourceLocation)
            return nil
        }
    }

    /// The virtual size qemu-img reports for `path` read as `format`.
    static func qemuVirtualSize(_ path: String, format: String) throws -> UInt64 {
        let result = try qemuImg("info", "--output=json", "-f", format, path)
        let json = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
        return (json?["virtual-size"] as? NSNumber)?.uint64Value ?? 0
    }

    /// SHA-256 of a file's bytes (for a raw image, its guest content).
    static func fileSHA256(_ path: String) throws -> String {
        SHA256.hash(data: try Data(contentsOf: URL(fileURLWithPath: path))).map { String(format: "%02x", $0) }.joined()
    }
}

@Suite struct VHDDecodingTests {
    @Test func footerDecodesFieldsAndChecksum() throws {
        var builder = VHDTestBuilder(virtualSize: 10 << 20)
        builder.cylinders = 301
        builder.heads = 4
        builder.sectorsPerTrack = 17
        let bytes = builder.footer(dataOffset: 512)
        let footer = try VHDFooter.decode(bytes)
        #expect(footer.checksumIsValid)
        #expect(footer.diskType == .dynamic)
        #expect(footer.currentSize == 10 << 20)
        #expect(footer.geometrySize == 301 * 4 * 17 * 512)
        #expect(footer.dataOffset == 512)
        #expect(footer.creatorApplicationText == "win ")
        var broken = bytes
        broken[100] ^= 1
        #expect(try !VHDFooter.decode(broken).checksumIsValid)
        // The 511-byte footer of early Virtual PC decodes the same way.
        #expect(try VHDFooter.decode(Array(bytes.prefix(511))).checksumIsValid == (bytes[511] == 0))
        #expect(throws: KDCTError.self) { try VHDFooter.decode([UInt8](repeating: 0, count: 512)) }
    }

    @Test(arguments: [
        ("vpc ", nil, VHDSizeMode.chs), ("qemu", nil, .chs), ("vs  ", nil, .chs), ("win ", nil, .current),
        ("d2v\0", nil, .current), ("qem2", nil, .current), ("vbox", nil, .current),
        ("vpc ", VHDSizeMode.current, .current), ("win ", VHDSizeMode.chs, .chs),
    ] as [(String, VHDSizeMode?, VHDSizeMode)])
    func sizeRuleFollowsCreatorAndOverride(creator: String, mode: VHDSizeMode?, expected: VHDSizeMode) throws {
        var builder = VHDTestBuilder(virtualSize: 10 << 20)
        builder.creator = creator
        (builder.cylinders, builder.heads, builder.sectorsPerTrack) = (301, 4, 17)
        let footer = try VHDFooter.decode(builder.footer(dataOffset: 512))
        let result = VHDSizeRule.virtualSize(of: footer, mode: mode)
        #expect(result.source == expected)
        #expect(result.size == (expected == .chs ? 301 * 4 * 17 * 512 : 10 << 20))
    }

    @Test func maximumGeometryAlwaysUsesCurrentSize() throws {
        var builder = VHDTestBuilder(virtualSize: 200 << 30)
        builder.creator = "vpc "
        let footer = try VHDFooter.decode(builder.footer(dataOffset: 512))
        #expect(footer.hasMaximumGeometry)
        #expect(VHDSizeRule.virtualSize(of: footer, mode: nil).size == 200 << 30)
        #expect(VHDSizeRule.virtualSize(of: footer, mode: .chs).size == 200 << 30)
    }

    @Test func windowsPathsConvert() {
        #expect(WindowsPath.convert(".\\fat-parent.vhd") == .init(localPath: "fat-parent.vhd", isWindowsAbsolute: false, fileName: "fat-parent.vhd"))
        #expect(WindowsPath.convert("..\\base\\p.vhdx").localPath == "../base/p.vhdx")
        #expect(WindowsPath.convert("sub\\p.vhd").localPath == "sub/p.vhd")
        for absolute in ["C:\\vms\\p.vhd", "\\\\?\\d:\\x\\p.vhdx", "\\\\?\\Volume{26A21BDA-A627-11D7-9931-806E6F6E6963}\\p.vhdx",
                         "\\\\server\\share\\p.vhd", "\\p.vhd", "c:p.vhd"] {
            let converted = WindowsPath.convert(absolute)
            #expect(converted.isWindowsAbsolute && converted.localPath == nil, "\(absolute)")
            #expect(converted.fileName == "p.vhd" || converted.fileName == "p.vhdx", "\(absolute)")
        }
        #expect(WindowsPath.pathFromFileURL("file://localhost/Users/a%20b/p.vhd") == "/Users/a b/p.vhd")
        #expect(WindowsPath.pathFromFileURL("file:///tmp/p.vhd") == "/tmp/p.vhd")
    }

    @Test func parentCandidatesPutLocatorsFirstAndFileNamesLast() {
        let candidates = ParentCandidate.list([
            ("W2ru locator", ".\\parent.vhd", false),
            ("W2ku locator", "C:\\vms\\parent.vhd", false),
            ("MacX locator", "/Users/me/other.vhd", true),
        ])
        #expect(candidates.map(\.path) == ["parent.vhd", nil, "/Users/me/other.vhd", "other.vhd"])
        #expect(candidates[1].unusableReason != nil)
    }

    @Test func locatorDataDecodes() {
        #expect(VHDParentLocator.decodeName(code: Array("W2ru".utf8), data: VHDTestBuilder.utf16le(".\\p.vhd") + [0, 0])?.name == ".\\p.vhd")
        #expect(VHDParentLocator.decodeName(code: Array("MacX".utf8), data: Array("file://localhost/Users/x/p.vhd".utf8))?.name == "/Users/x/p.vhd")
        var alias = [UInt8](repeating: 0, count: 150)
        alias[50] = 5
        alias.replaceSubrange(51..<56, with: Array("p.vhd".utf8))
        #expect(VHDParentLocator.decodeName(code: Array("Mac ".utf8), data: alias)?.name == "p.vhd")
        #expect(VHDParentLocator.decodeName(code: Array("Mac ".utf8), data: [1, 2, 3]) == nil)
        #expect(VHDParentLocator.decodeName(code: Array("Zzzz".utf8), data: [65, 0]) == nil)
    }

    @Test func sectorBitmapRunsInBothBitOrders() {
        let msb: [UInt8] = [0b1110_0000, 0xFF, 0x00, 0x01]
        #expect(SectorBitmap.run(in: msb, from: 0, to: 32, order: .mostSignificantFirst) == (true, 3))
        #expect(SectorBitmap.run(in: msb, from: 3, to: 32, order: .mostSignificantFirst) == (false, 5))
        #expect(SectorBitmap.run(in: msb, from: 8, to: 32, order: .mostSignificantFirst) == (true, 8))
        #expect(SectorBitmap.run(in: msb, from: 16, to: 32, order: .mostSignificantFirst) == (false, 15))
        #expect(SectorBitmap.run(in: msb, from: 16, to: 20, order: .mostSignificantFirst) == (false, 4))
        let lsb: [UInt8] = [0b0000_0111, 0xFF]
        #expect(SectorBitmap.run(in: lsb, from: 0, to: 16, order: .leastSignificantFirst) == (true, 3))
        #expect(SectorBitmap.run(in: lsb, from: 3, to: 16, order: .leastSignificantFirst) == (false, 5))
        if case .all = SectorBitmap.presence(of: [0xFF, 0xFF], bits: 16, order: .mostSignificantFirst) {} else { Issue.record("all") }
        if case .none = SectorBitmap.presence(of: [0, 0], bits: 16, order: .mostSignificantFirst) {} else { Issue.record("none") }
        if case .some = SectorBitmap.presence(of: [0xFF, 0xFE], bits: 16, order: .mostSignificantFirst) {} else { Issue.record("some") }
        // Bits past `bits` do not count.
        if case .all = SectorBitmap.presence(of: [0xFF, 0x00], bits: 8, order: .mostSignificantFirst) {} else { Issue.record("prefix") }
    }
}

/// VHDs made by qemu-img from the test pattern.
@Suite struct VHDQemuTests {
    @Test(arguments: [("dynamic", false), ("dynamic", true), ("fixed", false), ("fixed", true)])
    func qemuMadeVHDConvertsIdentically(subformat: String, forceSize: Bool) throws {
        let dir = try TemporaryDirectory()
        let source = try TestPattern.writeRaw(to: dir.file("src.raw"), size: 20 << 20 + 12345)
        let vhd = dir.file("disk.vhd")
        try qemuImg("convert", "-f", "raw", "-O", "vpc", "-o", "subformat=\(subformat),force_size=\(forceSize ? "on" : "off")",
                    source, vhd)
        let device = try ImageOpener.open(vhd)
        #expect(device.info.format == .vhd)
        #expect(device.info.subformat == subformat)
        #expect(device.virtualSize == (try VHDFamilyTest.qemuVirtualSize(vhd, format: "vpc")), "virtual size \(device.virtualSize)")
        if subformat == "dynamic" {
            let data = try device.allExtents().filter { $0.status == .data }.reduce(0) { $0 + $1.length }
            #expect(data < device.virtualSize / 2, "unallocated blocks must not be data extents")
            #expect(device.info.clusterSize == 2 << 20)
        }
        for format in [ImageFormat.raw, .qcow2] {
            let out = dir.file("out.\(format)")
            try convertImage(vhd, to: out, format: format)
            try expectQemuIdentical(vhd, out, formatA: "vpc", formatB: format.rawValue)
            if format == .qcow2 { try expectQemuCheckClean(out) }
            if forceSize {
                // force_size keeps the exact size: the output equals the pattern itself.
                try expectQemuIdentical(source, out, formatA: "raw", formatB: format.rawValue)
            }
        }
    }

    @Test func oldFixedDiskWithA511ByteFooter() throws {
        let dir = try TemporaryDirectory()
        var builder = VHDTestBuilder(virtualSize: 3 << 20)
        builder.diskType = 2
        builder.blocks[1] = .init(bitmap: [], data: VHDTestBuilder.noise(1 << 20, seed: 4))
        let bytes = builder.build()
        #expect(bytes.last == 0)
        let path = dir.file("old.vhd")
        try Data(bytes.dropLast()).write(to: URL(fileURLWithPath: path))
        let device = try ImageOpener.open(path)
        #expect(device.info.subformat == "fixed")
        #expect(device.virtualSize == 3 << 20)
        #expect(device.info.notes.contains { $0.contains("511-byte footer") })
        #expect(try device.readBytes(at: 2 << 20, count: 1 << 20) == builder.blocks[1]?.data)
    }

    @Test func sizeOverrideSwitchesBetweenGeometryAndCurrentSize() throws {
        let dir = try TemporaryDirectory()
        var builder = VHDTestBuilder(virtualSize: 10 << 20)
        builder.diskType = 2
        builder.creator = "vpc "
        (builder.cylinders, builder.heads, builder.sectorsPerTrack) = (301, 4, 17)
        builder.blocks[4] = .init(bitmap: [], data: VHDTestBuilder.noise(2 << 20, seed: 3))
        let path = try builder.write(to: dir.file("vpc.vhd"))
        let chs: UInt64 = 301 * 4 * 17 * 512
        let device = try ImageOpener.open(path)
        #expect(device.virtualSize == chs)
        #expect(device.info.notes.contains { $0.contains("CHS geometry") })
        #expect(device.info.formatSpecific["current-size"] == .unsigned(10 << 20))
        #expect(device.info.formatSpecific["chs-size"] == .unsigned(chs))
        #expect(device.virtualSize == (try VHDFamilyTest.qemuVirtualSize(path, format: "vpc")))
        var options = OpenOptions()
        options.vhdSizeMode = .current
        let whole = try ImageOpener.open(path, options: options)
        #expect(whole.virtualSize == 10 << 20)
        let tail = try whole.readBytes(at: (10 << 20) - 4096, count: 4096)
        #expect(tail == Array(builder.blocks[4]?.data.suffix(4096) ?? []))
    }
}

/// Differencing and partially allocated VHDs written by the tests.
@Suite struct VHDDifferencingTests {
    static let size: UInt64 = 12 << 20

    /// A dynamic parent made by qemu-img (force_size: exact size) and its footer's unique id.
    static func makeParent(in dir: TemporaryDirectory) throws -> (path: String, uniqueID: [UInt8]) {
        let source = try TestPattern.writeRaw(to: dir.file("parent.raw"), size: size)
        let parent = dir.file("parent.vhd")
        try qemuImg("convert", "-f", "raw", "-O", "vpc", "-o", "subformat=dynamic,force_size=on", source, parent)
        let head = Array(try Data(contentsOf: URL(fileURLWithPath: parent)).prefix(512))
        return (parent, try VHDFooter.decode(head).uniqueID)
    }

    /// A child over `parentID` with blocks full, partial, empty and unallocated; returns the builder.
    static func childBuilder(parentID: [UInt8], locators: [VHDTestBuilder.Locator]) -> VHDTestBuilder {
        var child = VHDTestBuilder(virtualSize: size)
        child.diskType = 4
        child.uniqueID = Array(100..<116)
        child.parentUniqueID = parentID
        child.parentName = "C:\\vms\\parent.vhd"
        child.locators = locators
        let sectors = Int(child.blockSize / 512)
        let data = { (seed: UInt64) in VHDTestBuilder.noise(Int(child.blockSize), seed: seed) }
        child.blocks[0] = .init(bitmap: VHDTestBuilder.bitmap(sectors: sectors, present: [0..<sectors]), data: data(1))
        child.blocks[1] = .init(bitmap: VHDTestBuilder.bitmap(sectors: sectors, present: [0..<10, 100..<201, 4000..<4096]), data: data(2))
        child.blocks[3] = .init(bitmap: VHDTestBuilder.bitmap(sectors: sectors, present: []), data: data(3))
        child.blocks[5] = .init(bitmap: VHDTestBuilder.bitmap(sectors: sectors, present: [7..<9, 4095..<4096]), data: data(4))
        return child
    }

    /// The expected flattened content: the parent's bytes with the child's present sectors laid over them.
    static func expectedRaw(parentRaw: String, child: VHDTestBuilder, to path: String) throws -> String {
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: parentRaw)))
        let blockSize = Int(child.blockSize)
        for (index, block) in child.blocks {
            for sector in 0..<(blockSize / 512) where block.bitmap[sector / 8] & (0x80 >> UInt8(sector % 8)) != 0 {
                let guest = index * blockSize + sector * 512
                bytes.replaceSubrange(guest..<(guest + 512), with: block.data[(sector * 512)..<(sector * 512 + 512)])
            }
        }
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    static let relativeLocators: [VHDTestBuilder.Locator] = [
        .init(code: "W2ku", data: VHDTestBuilder.utf16le("C:\\vms\\parent.vhd")),
        .init(code: "W2ru", data: VHDTestBuilder.utf16le(".\\parent.vhd")),
    ]

    @Test func differencingChainFlattensToParentOverlaidWithChild() throws {
        let dir = try TemporaryDirectory()
        let parent = try Self.makeParent(in: dir)
        let builder = Self.childBuilder(parentID: parent.uniqueID, locators: Self.relativeLocators)
        let child = try builder.write(to: dir.file("child.vhd"))
        let expected = try Self.expectedRaw(parentRaw: dir.file("parent.raw"), child: builder, to: dir.file("expected.raw"))

        let device = try ImageOpener.open(child)
        #expect(device is ChainedBlockDevice)
        #expect(device.info.subformat == "differencing")
        #expect(device.info.references.contains { $0.opened && $0.resolvedPath?.hasSuffix("/parent.vhd") == true })
        #expect(try GuestDigest.sha256(of: device) == (try VHDFamilyTest.fileSHA256(expected)))
        // Sectors 10..<100 of block 1 are not in the child: they come from the parent (depth 1).
        let extent = try device.extent(at: (2 << 20) + 10 * 512, maxLength: 1 << 20)
        #expect(extent.depth == 1 && extent.length <= 90 * 512, "\(extent)")
        let top = try #require(VHDImage.vhdLayer(of: device))
        #expect(try top.extent(at: 2 << 20, maxLength: 1 << 20) == Extent(offset: 2 << 20, length: 10 * 512, status: .data,
                                                                          hostOffset: try top.extent(at: 2 << 20, maxLength: 1).hostOffset,
                                                                          file: child))
        #expect(try top.extent(at: 3 << 20, maxLength: 16 << 20).status == .absent)  // block 1 from sector 2048: absent

        for format in [ImageFormat.raw, .qcow2] {
            let out = dir.file("flat.\(format)")
            try convertImage(child, to: out, format: format)
            try expectQemuIdentical(expected, out, formatA: "raw", formatB: format.rawValue)
            if format == .qcow2 { try expectQemuCheckClean(out) }
        }
    }

    @Test func unalignedReadsAcrossPartialBitmapsMatchTheExpectedBytes() throws {
        let dir = try TemporaryDirectory()
        let parent = try Self.makeParent(in: dir)
        let builder = Self.childBuilder(parentID: parent.uniqueID, locators: Self.relativeLocators)
        let child = try builder.write(to: dir.file("child.vhd"))
        let expected = [UInt8](try Data(contentsOf: URL(fileURLWithPath: try Self.expectedRaw(
            parentRaw: dir.file("parent.raw"), child: builder, to: dir.file("expected.raw")))))
        let device = try ImageOpener.open(child)
        for (offset, length) in [(2 << 20 + 5 * 512 + 17, 700), (2 << 20 + 9 * 512 + 511, 100_000), (4 << 20 - 3, 9),
                                 (10 << 20 + 7 * 512 - 1, 1030), (0, 5 << 20)] {
            let got = try device.readBytes(at: UInt64(offset), count: length)
            #expect(got == Array(expected[offset..<(offset + length)]), "read at \(offset)+\(length)")
        }
    }

    @Test func dynamicDiskSectorsWithClearBitsReadAsZeros() throws {
        let dir = try TemporaryDirectory()
        var builder = VHDTestBuilder(virtualSize: 6 << 20)
        let sectors = Int(builder.blockSize / 512)
        builder.blocks[1] = .init(bitmap: VHDTestBuilder.bitmap(sectors: sectors, present: [1..<3]),
                                  data: VHDTestBuilder.noise(Int(builder.blockSize), seed: 9))
        let path = try builder.write(to: dir.file("dyn.vhd"))
        let device = try ImageOpener.open(path)
        let block = try device.readBytes(at: 2 << 20, count: 4 * 512)
        #expect(block[0..<512].allSatisfy { $0 == 0 })
        #expect(Array(block[512..<1536]) == Array(builder.blocks[1]?.data[512..<1536] ?? []))
        #expect(block[1536...].allSatisfy { $0 == 0 })
        let data = try device.allExtents().filter { $0.status == .data }
        #expect(data.map(\.length) == [1024])
    }

    @Test func infoReportsParentLocatorsWithoutOpeningThem() throws {
        let dir = try TemporaryDirectory()
        let builder = Self.childBuilder(parentID: Array(0..<16), locators: Self.relativeLocators)
        let child = try builder.write(to: dir.file("child.vhd"))
        let info = try ImageOpener.inspect(child)
        #expect(info.subformat == "differencing")
        #expect(info.backingFilename == "C:\\vms\\parent.vhd")
        #expect(Set(info.references.map(\.name)) == ["C:\\vms\\parent.vhd", ".\\parent.vhd"])
        #expect(info.references.allSatisfy { !$0.opened })
        guard case let .array(locators)? = info.formatSpecific["parent-locators"] else {
            Issue.record("no parent-locators in \(info.formatSpecific)")
            return
        }
        #expect(locators.map { $0["name"] } == [.string("C:\\vms\\parent.vhd"), .string(".\\parent.vhd")])
        #expect(locators.map { $0["platform"] } == [.string("W2ku"), .string("W2ru")])
    }

    @Test func missingParentNamesEveryLocatorTried() throws {
        let dir = try TemporaryDirectory()
        let builder = Self.childBuilder(parentID: Array(0..<16), locators: Self.relativeLocators)
        let child = try builder.write(to: dir.file("child.vhd"))
        VHDFamilyTest.expectOpenError(child, .notFound, mentions: ["parent.vhd", "W2ru locator \".\\parent.vhd\"", "W2ku locator \"C:\\vms\\parent.vhd\""])
        var strict = OpenOptions()
        strict.untrusted = true
        VHDFamilyTest.expectOpenError(child, .referenceRefused, mentions: ["parent.vhd"], options: strict)
    }

    @Test func parentWithAnotherUniqueIDIsRefused() throws {
        let dir = try TemporaryDirectory()
        _ = try Self.makeParent(in: dir)
        let builder = Self.childBuilder(parentID: Array(200..<216), locators: Self.relativeLocators)
        let child = try builder.write(to: dir.file("child.vhd"))
        VHDFamilyTest.expectOpenError(child, .corrupt, mentions: ["unique id"])
    }

    @Test func parentInASiblingDirectoryNeedsTheWiderPolicy() throws {
        let dir = try TemporaryDirectory()
        let parent = try Self.makeParent(in: dir)
        try FileManager.default.createDirectory(atPath: dir.file("child"), withIntermediateDirectories: false)
        let builder = Self.childBuilder(parentID: parent.uniqueID,
                                        locators: [.init(code: "W2ru", data: VHDTestBuilder.utf16le("..\\parent.vhd"))])
        let child = try builder.write(to: dir.file("child/child.vhd"))
        VHDFamilyTest.expectOpenError(child, .referenceRefused, mentions: ["..\\parent.vhd"])
        var wide = OpenOptions()
        wide.referencePolicy = .any
        let device = try ImageOpener.open(child, options: wide)
        let expected = try Self.expectedRaw(parentRaw: dir.file("parent.raw"), child: builder, to: dir.file("expected.raw"))
        #expect(try GuestDigest.sha256(of: device) == (try VHDFamilyTest.fileSHA256(expected)))
    }

    @Test func posixAbsoluteLocatorNeedsTheWiderPolicy() throws {
        // VirtualBox on Linux stores the parent's POSIX path in the W2ku locator.
        let dir = try TemporaryDirectory()
        let parent = try Self.makeParent(in: dir)
        try FileManager.default.createDirectory(atPath: dir.file("child"), withIntermediateDirectories: false)
        let absolute = try #require(FilePaths.canonical(parent.path))
        let builder = Self.childBuilder(parentID: parent.uniqueID,
                                        locators: [.init(code: "W2ku", data: VHDTestBuilder.utf16le(absolute))])
        let child = try builder.write(to: dir.file("child/child.vhd"))
        VHDFamilyTest.expectOpenError(child, .referenceRefused, mentions: [absolute])
        var wide = OpenOptions()
        wide.referencePolicy = .any
        let device = try ImageOpener.open(child, options: wide)
        #expect(device.info.references.contains { $0.opened && $0.resolvedPath == absolute })
    }

    @Test func absoluteLocatorFindsTheParentByFileName() throws {
        let dir = try TemporaryDirectory()
        let parent = try Self.makeParent(in: dir)
        let builder = Self.childBuilder(parentID: parent.uniqueID,
                                        locators: [.init(code: "W2ku", data: VHDTestBuilder.utf16le("D:\\old\\place\\parent.vhd"))])
        let child = try builder.write(to: dir.file("child.vhd"))
        let device = try ImageOpener.open(child)
        #expect(device.info.references.contains { $0.opened && $0.name == "D:\\old\\place\\parent.vhd" })
    }
}

/// Hostile VHDs: each must fail with a clear error, before allocating anything sized by the bad field.
@Suite struct VHDHostileTests {
    static func dynamic() -> VHDTestBuilder {
        var builder = VHDTestBuilder(virtualSize: 6 << 20)
        let sectors = Int(builder.blockSize / 512)
        builder.blocks[0] = .init(bitmap: VHDTestBuilder.bitmap(sectors: sectors, present: [0..<sectors]),
                                  data: VHDTestBuilder.noise(Int(builder.blockSize), seed: 1))
        return builder
    }

    /// Writes `bytes` after `edit` to a file in `dir`.
    static func write(_ bytes: [UInt8], _ dir: TemporaryDirectory, _ name: String = "bad.vhd") throws -> String {
        let path = dir.file(name)
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    /// Edits the dynamic header at 512 and restores its checksum.
    static func editHeader(_ bytes: inout [UInt8], _ edit: (inout ByteWriter) -> Void) {
        var header = ByteWriter(count: 1024)
        header.put(Array(bytes[512..<1536]), at: 0)
        edit(&header)
        var raw = header.bytes
        VHDTestBuilder.setChecksum(&raw, at: 36)
        bytes.replaceSubrange(512..<1536, with: raw)
    }

    @Test func validBaselineOpens() throws {
        let dir = try TemporaryDirectory()
        let device = try ImageOpener.open(try Self.write(Self.dynamic().build(), dir))
        #expect(device.virtualSize == 6 << 20)
    }

    @Test func footerChecksumMismatch() throws {
        let dir = try TemporaryDirectory()
        var bytes = Self.dynamic().build()
        bytes[70] ^= 0xFF  // unique id byte, head copy
        bytes[bytes.count - 512 + 70] ^= 0xFF  // and the copy at the end
        VHDFamilyTest.expectOpenError(try Self.write(bytes, dir), .checksum, mentions: ["footer", "checksum"])
        // With only the first copy damaged, the one at the end is used.
        var one = Self.dynamic().build()
        one[70] ^= 0xFF
        let device = try ImageOpener.open(try Self.write(one, dir, "one.vhd"))
        #expect(device.info.notes.contains { $0.contains("bad checksum") })
    }

    @Test func dynamicHeaderChecksumMismatch() throws {
        let dir = try TemporaryDirectory()
        var bytes = Self.dynamic().build()
        bytes[512 + 100] ^= 0x55  // parent name area, checksum not updated
        VHDFamilyTest.expectOpenError(try Self.write(bytes, dir), .checksum, mentions: ["dynamic disk header checksum"])
    }

    @Test(arguments: [0, 3 << 20, 256] as [UInt32])
    func badBlockSize(blockSize: UInt32) throws {
        let dir = try TemporaryDirectory()
        var bytes = Self.dynamic().build()
        Self.editHeader(&bytes) { $0.u32be(blockSize, at: 32) }
        VHDFamilyTest.expectOpenError(try Self.write(bytes, dir), .corrupt, mentions: ["block size \(blockSize)"])
    }

    @Test func hugeMaxTableEntriesIsALimitNotAnAllocation() throws {
        let dir = try TemporaryDirectory()
        var bytes = Self.dynamic().build()
        Self.editHeader(&bytes) { $0.u32be(0x4000_0001, at: 28) }
        VHDFamilyTest.expectOpenError(try Self.write(bytes, dir), .limitExceeded, mentions: ["max table entries 1073741825"])
    }

    @Test func tableTooSmallForTheDisk() throws {
        let dir = try TemporaryDirectory()
        var bytes = Self.dynamic().build()
        Self.editHeader(&bytes) { $0.u32be(2, at: 28) }
        VHDFamilyTest.expectOpenError(try Self.write(bytes, dir), .corrupt, mentions: ["max table entries 2"])
    }

    @Test func batEntryBeyondTheFile() throws {
        let dir = try TemporaryDirectory()
        var builder = Self.dynamic()
        builder.batOverride[2] = 0x0100_0000  // 8 GiB into a 2 MiB file
        VHDFamilyTest.expectOpenError(try Self.write(builder.build(), dir), .truncated, mentions: ["BAT entry 2", "past the end of the file"])
    }

    @Test func batEntryIntoTheMetadataOrAnotherBlock() throws {
        let dir = try TemporaryDirectory()
        var builder = Self.dynamic()
        builder.batOverride[1] = 1  // the dynamic header
        VHDFamilyTest.expectOpenError(try Self.write(builder.build(), dir), .corrupt, mentions: ["BAT entry 1", "overlapping metadata"])
        var twice = Self.dynamic()
        let bytes = twice.build()
        let tableOffset = 512 + 1024
        let first = UInt32(bytes[tableOffset]) << 24 | UInt32(bytes[tableOffset + 1]) << 16
            | UInt32(bytes[tableOffset + 2]) << 8 | UInt32(bytes[tableOffset + 3])
        twice.batOverride[2] = first + 1
        VHDFamilyTest.expectOpenError(try Self.write(twice.build(), dir, "twice.vhd"), .corrupt, mentions: ["overlap"])
    }

    @Test func unknownDiskType() throws {
        let dir = try TemporaryDirectory()
        var builder = Self.dynamic()
        builder.diskType = 5
        VHDFamilyTest.expectOpenError(try Self.write(builder.build(), dir), .unsupported, mentions: ["disk type 5"])
    }

    @Test func truncatedHeaderAndBAT() throws {
        let dir = try TemporaryDirectory()
        let bytes = Self.dynamic().build()
        // Footer copy + half a dynamic header, then a footer at the end.
        let cut = Array(bytes.prefix(900)) + Array(bytes.suffix(512))
        VHDFamilyTest.expectOpenError(try Self.write(cut, dir), .truncated)
    }

    @Test func fixedDiskLargerThanItsData() throws {
        let dir = try TemporaryDirectory()
        var builder = VHDTestBuilder(virtualSize: 1 << 20)
        builder.diskType = 2
        var bytes = builder.build()
        bytes.removeFirst(4096)  // data shorter than the footer says
        VHDFamilyTest.expectOpenError(try Self.write(bytes, dir), .truncated, mentions: ["fixed disk"])
    }
}
