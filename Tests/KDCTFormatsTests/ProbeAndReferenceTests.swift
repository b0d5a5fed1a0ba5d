import Foundation
import Testing
@testable import KDCTFormats
import KDCTTestSupport

/// Format probing from bytes and the reference policy.
@Suite struct ProbeTests {
    func bytes(_ head: [UInt8], padTo size: Int = 4096) -> [UInt8] { head + [UInt8](repeating: 0, count: max(0, size - head.count)) }

    @Test func magicNumbers() {
        #expect(FormatProbe.probe(head: bytes([0x51, 0x46, 0x49, 0xFB, 0, 0, 0, 3])).format == .qcow2)
        #expect(FormatProbe.probe(head: bytes([0x51, 0x46, 0x49, 0xFB, 0, 0, 0, 2])).format == .qcow2)
        #expect(FormatProbe.probe(head: bytes([0x51, 0x46, 0x49, 0xFB, 0, 0, 0, 1])).format == .qcow)
        #expect(FormatProbe.probe(head: bytes(Array("QED\0".utf8))).format == .qed)
        #expect(FormatProbe.probe(head: bytes(Array("vhdxfile".utf8))).format == .vhdx)
        #expect(FormatProbe.probe(head: bytes(Array("KDMV".utf8))).format == .vmdk)
        #expect(FormatProbe.probe(head: bytes(Array("COWD".utf8))).format == .vmdk)
        #expect(FormatProbe.probe(head: bytes(Array("conectix".utf8))).format == .vhd)
        var vdi = bytes([])
        vdi.replaceSubrange(0x40..<0x44, with: [0x7F, 0x10, 0xDA, 0xBE])
        #expect(FormatProbe.probe(head: vdi).format == .vdi)
        let descriptor = Array("# Disk DescriptorFile\nversion=1\ncreateType=\"monolithicFlat\"\n".utf8)
        #expect(FormatProbe.probe(head: descriptor).format == .vmdk)
        #expect(FormatProbe.probe(head: bytes([0xEB, 0x63, 0x90])).format == .raw)
        #expect(FormatProbe.probe(head: []).format == .raw)
    }

    @Test func fixedVHDIsFoundByItsFooter() {
        let footer = bytes(Array("conectix".utf8), padTo: 512)
        #expect(FormatProbe.probe(head: bytes([0xEB, 0x63]), tail: footer).format == .vhd)
        // Old Virtual PC files have a 511-byte footer.
        #expect(FormatProbe.probe(head: bytes([0xEB]), tail: [0] + Array(footer.prefix(511)),
                                  tail511: Array(footer.prefix(511))).format == .vhd)
    }

    @Test func ambiguousFilesAreRefusedInStrictMode() throws {
        let dir = try TemporaryDirectory()
        // A qcow2 header with a VHD footer behind it.
        let image = dir.file("both.qcow2")
        _ = try qemuImg("create", "-f", "qcow2", image, "1M")
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: image))
        try handle.seekToEnd()
        handle.write(Data(bytes(Array("conectix".utf8), padTo: 512)))
        try handle.close()
        #expect(try ImageOpener.open(image).info.format == .qcow2)
        var strict = OpenOptions()
        strict.untrusted = true
        do {
            _ = try ImageOpener.open(image, options: strict)
            Issue.record("ambiguous file accepted in strict mode")
        } catch let error as KDCTError {
            #expect(error.code == .invalidFormat)
            #expect(error.message.contains("more than one format"))
        }
        // A qcow2 header inside an ISO 9660 system area.
        let iso = dir.file("disc.iso")
        var content = [UInt8](repeating: 0, count: 0x9000)
        content.replaceSubrange(0..<4, with: [0x51, 0x46, 0x49, 0xFB])
        content.replaceSubrange(4..<8, with: [0, 0, 0, 3])
        content.replaceSubrange(0x8001..<0x8006, with: Array("CD001".utf8))
        try Data(content).write(to: URL(fileURLWithPath: iso))
        #expect(throws: KDCTError.self) { try ImageOpener.open(iso, options: strict) }
    }

    @Test func extensionWithoutMatchingContentIsAnError() throws {
        let dir = try TemporaryDirectory()
        for ext in ["vdi", "vmdk", "vhd", "vhdx", "qcow2", "qcow", "qed"] {
            let path = dir.file("disk.\(ext)")
            try Data(repeating: 0x33, count: 8192).write(to: URL(fileURLWithPath: path))
            do {
                _ = try ImageOpener.open(path)
                Issue.record(".\(ext) with junk opened as raw")
            } catch let error as KDCTError {
                #expect(error.code == .invalidFormat)
                #expect(error.message.contains("matches no image format"))
            }
        }
        // The same junk named .img is raw.
        let raw = dir.file("disk.img")
        try Data(repeating: 0x33, count: 8192).write(to: URL(fileURLWithPath: raw))
        #expect(try ImageOpener.open(raw).info.format == .raw)
        // A declaration the content contradicts is an error, either way round.
        #expect(throws: KDCTError.self) { try ImageOpener.open(raw, options: OpenOptions(format: .qcow2)) }
        let qcow2 = dir.file("real.qcow2")
        _ = try qemuImg("create", "-f", "qcow2", qcow2, "1M")
        #expect(throws: KDCTError.self) { try ImageOpener.open(qcow2, options: OpenOptions(format: .raw)) }
        #expect(try ImageOpener.open(qcow2, options: OpenOptions(format: .qcow2)).virtualSize == 1 << 20)
    }
}

@Suite struct ReferencePolicyTests {
    @Test func protocolPrefixes() {
        #expect(ReferenceResolver.protocolPrefix(of: "json:{\"file\":1}") == "json")
        #expect(ReferenceResolver.protocolPrefix(of: "nbd:localhost:10809") == "nbd")
        #expect(ReferenceResolver.protocolPrefix(of: "http://x/y") == "http")
        #expect(ReferenceResolver.protocolPrefix(of: "C:\\disk.vhd") == nil)
        #expect(ReferenceResolver.protocolPrefix(of: "base.qcow2") == nil)
        #expect(ReferenceResolver.protocolPrefix(of: "dir/a:b.qcow2") == nil)
    }

    @Test func policies() throws {
        let dir = try TemporaryDirectory()
        let image = dir.file("top.qcow2")
        try Data().write(to: URL(fileURLWithPath: dir.file("base.qcow2")))
        try FileManager.default.createDirectory(atPath: dir.file("sub"), withIntermediateDirectories: true)
        try Data().write(to: URL(fileURLWithPath: dir.file("sub/inner.qcow2")))
        let outside = try TemporaryDirectory()
        try Data().write(to: URL(fileURLWithPath: outside.file("secret.img")))
        try FileManager.default.createSymbolicLink(atPath: dir.file("escape.qcow2"), withDestinationPath: outside.file("secret.img"))

        func resolve(_ name: String, _ policy: ReferencePolicy) throws -> String {
            try ReferenceResolver.resolve(name, kind: .backingFile, relativeTo: image, policy: policy)
        }
        func refused(_ name: String, _ policy: ReferencePolicy, _ kind: KDCTError.Code = .referenceRefused,
                     sourceLocation: SourceLocation = #_sourceLocation) {
            do {
                _ = try resolve(name, policy)
                Issue.record("\(name) accepted under \(policy)", sourceLocation: sourceLocation)
            } catch let error as KDCTError {
                #expect(error.code == kind, "\(error)", sourceLocation: sourceLocation)
                #expect(error.message.contains(name), "error must name the reference: \(error)", sourceLocation: sourceLocation)
            } catch {
                Issue.record("\(error)", sourceLocation: sourceLocation)
            }
        }
        #expect(try resolve("base.qcow2", .sameDirectory).hasSuffix("/base.qcow2"))
        #expect(try resolve("sub/inner.qcow2", .sameDirectory).hasSuffix("/sub/inner.qcow2"))
        refused("../x.qcow2", .sameDirectory)
        refused("sub/../base.qcow2", .sameDirectory)
        refused(outside.file("secret.img"), .sameDirectory)
        refused("escape.qcow2", .sameDirectory)
        refused("json:{\"driver\":\"file\"}", .any)
        refused("nbd:127.0.0.1:10809", .any)
        refused("base.qcow2", .none)
        refused("missing.qcow2", .sameDirectory, .notFound)
        refused("sub", .any)   // a directory, not a regular file
        #expect(try resolve(outside.file("secret.img"), .any).hasSuffix("secret.img"))
        #expect(try resolve("escape.qcow2", .any).hasSuffix("secret.img"))
    }

    @Test func chainLoopsAndDepth() throws {
        let dir = try TemporaryDirectory()
        let a = dir.file("a.qcow2")
        let b = dir.file("b.qcow2")
        _ = try qemuImg("create", "-f", "qcow2", b, "1M")
        _ = try qemuImg("create", "-f", "qcow2", "-u", "-b", "b.qcow2", "-F", "qcow2", a, "1M")
        _ = try qemuImg("rebase", "-u", "-f", "qcow2", "-b", "a.qcow2", "-F", "qcow2", b)
        do {
            _ = try ImageOpener.open(a)
            Issue.record("a backing loop opened")
        } catch let error as KDCTError {
            #expect(error.code == .corrupt)
            #expect(error.message.contains("loops back"))
        }
        // A chain deeper than the limit.
        var previous = "l0.qcow2"
        _ = try qemuImg("create", "-f", "qcow2", dir.file(previous), "1M")
        for level in 1...5 {
            let name = "l\(level).qcow2"
            _ = try qemuImg("create", "-f", "qcow2", "-b", previous, "-F", "qcow2", dir.file(name))
            previous = name
        }
        var options = OpenOptions()
        options.limits.maxChainDepth = 3
        do {
            _ = try ImageOpener.open(dir.file(previous), options: options)
            Issue.record("chain deeper than the limit opened")
        } catch let error as KDCTError {
            #expect(error.code == .limitExceeded)
        }
        #expect(try ImageOpener.open(dir.file(previous)).virtualSize == 1 << 20)
    }
}
