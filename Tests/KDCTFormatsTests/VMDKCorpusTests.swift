import Foundation
import Testing
@testable import KDCTFormats
import KDCTTestSupport

/// Every VMDK of the real-world corpus against its manifest entry.
@Suite struct VMDKCorpusTests {
    /// Manifest entries that concern VMDK files: format vmdk, or errors/extents of `.vmdk` files.
    static func vmdkEntries(_ entries: [Corpus.Entry]) -> [Corpus.Entry] {
        entries.filter { $0.format == "vmdk" || $0.file.lowercased().hasSuffix(".vmdk") }
    }

    /// The error code and message fragment each manifest reason stands for.
    static func expectation(for reason: String) -> (code: KDCTError.Code, fragment: String) {
        switch reason {
        case "extent-without-descriptor": return (.invalidFormat, "extent without descriptor")
        case "extent-missing": return (.notFound, "extent \"")
        case "corrupt": return (.corrupt, "")
        case "truncated": return (.truncated, "")
        default: return (.corrupt, reason)
        }
    }

    @Test func everyVMDKMeetsItsManifestEntry() throws {
        guard let corpus = Corpus.load() else { return }
        let entries = Self.vmdkEntries(corpus.entries)
        #expect(entries.count >= 19, "the manifest should list the VMDK corpus files")
        for entry in entries {
            let path = corpus.directory + "/" + entry.file
            if entry.expect == "ok" {
                let device = try ImageOpener.open(path)
                #expect(device.virtualSize == entry.virtual_size, "\(entry.file): virtual size")
                #expect(device.info.format == .vmdk, "\(entry.file): format")
                #expect(try GuestDigest.sha256(of: device) == entry.sha256, "\(entry.file): guest SHA-256")
            } else if entry.expect.hasPrefix("ok-via-descriptor:") {
                let descriptor = String(entry.expect.dropFirst("ok-via-descriptor:".count))
                let descriptorPath = FilePaths.join(FilePaths.directory(of: path), descriptor)
                let device = try ImageOpener.open(descriptorPath)
                #expect(device.info.references.contains { $0.kind == .extent && $0.opened && $0.resolvedPath?.hasSuffix(FilePaths.lastComponent(of: entry.file)) == true },
                        "\(entry.file) should be opened as an extent of \(descriptor)")
                // On its own it is an extent without descriptor.
                let error = #expect(throws: KDCTError.self) { try ImageOpener.open(path) }
                #expect(error?.code == .invalidFormat && error?.message.contains("extent without descriptor") == true,
                        "\(entry.file) alone: \(String(describing: error))")
            } else if entry.expect.hasPrefix("error:") {
                let reason = String(entry.expect.dropFirst("error:".count))
                let wanted = Self.expectation(for: reason)
                let error = #expect(throws: KDCTError.self, "\(entry.file) should fail with \(reason)") {
                    let device = try ImageOpener.open(path)
                    _ = try GuestDigest.sha256(of: device)
                }
                #expect(error?.code == wanted.code, "\(entry.file): expected \(wanted.code), got \(String(describing: error))")
                #expect(wanted.fragment.isEmpty || error?.message.contains(wanted.fragment) == true,
                        "\(entry.file): message should contain \(wanted.fragment): \(String(describing: error))")
                #expect(error?.file != nil, "\(entry.file): the error should name a file")
            } else {
                Issue.record("\(entry.file): unexpected manifest expectation \(entry.expect)")
            }
        }
    }

    @Test func missingExtentErrorsNameTheExtentFile() throws {
        guard let corpus = Corpus.load() else { return }
        let cases = [("image_t2.vmdk", "image_t2-flat.vmdk"), ("image_t3.vmdk", "image_t3-f001.vmdk"),
                     ("image_t4.vmdk", "image_t4-flat.vmdk")]
        for (descriptor, extent) in cases {
            let path = corpus.directory + "/bwlp-master-sync-shared/" + descriptor
            let error = #expect(throws: KDCTError.self) { try ImageOpener.open(path) }
            #expect(error?.code == .notFound)
            #expect(error?.message.contains(extent) == true, "\(descriptor): \(String(describing: error))")
        }
    }

    @Test func vmfsDescriptorWithTrailingOffsetIsParsed() throws {
        guard let corpus = Corpus.load() else { return }
        // image_t4 is "RW 20480 VMFS \"image_t4-flat.vmdk\" 0": info parses it without opening the flat file.
        let info = try ImageOpener.inspect(corpus.directory + "/bwlp-master-sync-shared/image_t4.vmdk")
        #expect(info.subformat == "vmfs")
        #expect(info.virtualSize == 20480 * 512)
        #expect(info.references == [ImageReference(kind: .extent, name: "image_t4-flat.vmdk")])
        #expect(info.producer?.contains("ESXi") == true)
    }

    @Test func infoReportsCreateTypeExtentsAndCIDs() throws {
        guard let corpus = Corpus.load() else { return }
        let info = try ImageOpener.inspect(corpus.directory + "/bwlp-master-sync-shared/image_t1.vmdk")
        #expect(info.subformat == "twoGbMaxExtentSparse")
        #expect(info.formatSpecific["cid"] == .unsigned(0xf879aea6))
        #expect(info.formatSpecific["parent-cid"] == .unsigned(0xffffffff))
        #expect(info.formatSpecific["adapter-type"] == .string("ide"))
        #expect(info.formatSpecific["hardware-version"] == .string("18"))
        #expect(info.producer == "VMware Workstation/Fusion (virtual hardware version 18)")
        guard case let .array(extents)? = info.formatSpecific["extents"] else {
            Issue.record("no extents in format-specific")
            return
        }
        #expect(extents.count == 1)
        #expect(extents.first?["type"] == .string("SPARSE"))
        #expect(extents.first?["filename"] == .string("image_t1-s001.vmdk"))

        let stream = try ImageOpener.inspect(corpus.directory + "/qemu-iotests/iotest-version3.vmdk")
        #expect(stream.subformat == "streamOptimized")
        #expect(stream.formatSpecific["compressed"] == .bool(true))
        #expect(stream.formatSpecific["version"] == .unsigned(3))
        #expect(stream.clusterSize == 65536)
    }

    @Test func mapShowsCompressedGrainsOfAStream() throws {
        guard let corpus = Corpus.load() else { return }
        let device = try ImageOpener.open(corpus.directory + "/bwlp-master-sync-shared/image_t5.vmdk")
        let extents = try device.allExtents()
        #expect(extents.contains { $0.status == .data && $0.compressed && $0.hostOffset == nil })
        let sparse = try ImageOpener.open(corpus.directory + "/bwlp-master-sync-shared/image_t0.vmdk")
        let data = try sparse.allExtents().filter { $0.status == .data }
        #expect(!data.isEmpty && data.allSatisfy { !$0.compressed && $0.hostOffset != nil })
    }
}
