import Foundation
import Testing
@testable import KDCTFormats
import KDCTTestSupport

/// Checks every VHD and VHDX of the real-world corpus against its manifest entry.
@Suite struct VHDCorpusTests {
    static func isVHDFamily(_ entry: Corpus.Entry, extensions: [String], format: String) -> Bool {
        entry.format == format || extensions.contains(FilePaths.fileExtension(of: entry.file))
    }

    /// Entries of the VHD family (VHD: also the fuzzed afl5.img, which is a VHD).
    static func entries(vhdx: Bool) -> [Corpus.Entry] {
        guard let corpus = Corpus.load() else { return [] }
        return corpus.entries.filter { entry in
            if vhdx { return isVHDFamily(entry, extensions: ["vhdx", "avhdx"], format: "vhdx") }
            return isVHDFamily(entry, extensions: ["vhd", "avhd"], format: "vhd") || entry.file.hasSuffix("afl5.img")
        }
    }

    /// Opens and hashes `entry`, or checks the error it must fail with.
    static func check(_ entry: Corpus.Entry, in directory: String) throws {
        let path = directory + "/" + entry.file
        if entry.expect == "ok" || entry.expect == "ok-after-log-replay" {
            let device = try ImageOpener.open(path)
            #expect(device.virtualSize == entry.virtual_size, "\(entry.file): virtual size")
            let digest = try GuestDigest.sha256(of: device)
            #expect(digest == entry.sha256, "\(entry.file): guest SHA-256")
            if entry.expect == "ok-after-log-replay" {
                #expect(device.info.dirty, "\(entry.file): a replayed log leaves the image marked dirty")
                #expect(device.info.notes.contains { $0.hasPrefix("log replayed") }, "\(entry.file): notes \(device.info.notes)")
            }
            return
        }
        guard entry.expect.hasPrefix("error:") else {
            Issue.record("\(entry.file): unexpected expectation \(entry.expect)")
            return
        }
        let reason = String(entry.expect.dropFirst("error:".count))
        do {
            let device = try ImageOpener.open(path)
            _ = try GuestDigest.sha256(of: device)
            Issue.record("\(entry.file): opened and read, expected \(entry.expect)")
        } catch let error as KDCTError {
            switch reason {
            case "checksum":
                #expect(error.code == .checksum, "\(entry.file): \(error)")
            case "parent-missing":
                #expect(error.code == .notFound, "\(entry.file): \(error)")
                // The message must name the parent the image records (its file name at least).
                let info = try ImageOpener.inspect(path)
                let parent = try #require(info.backingFilename, "\(entry.file): no parent name in info")
                let name = WindowsPath.convert(parent).fileName
                #expect(!name.isEmpty && error.message.contains(name), "\(entry.file): \(error) does not name \(name)")
            case "corrupt":
                // A fuzzed table size: reported as corrupt, or as a table above the size limit.
                #expect(error.code == .corrupt || error.code == .limitExceeded, "\(entry.file): \(error)")
            default:
                #expect(error.code.rawValue == reason, "\(entry.file): \(error)")
            }
            print("\(entry.file): \(error)")
        }
    }

    @Test func corpusHoldsTheVHDFamily() {
        guard Corpus.load() != nil else { return }
        let vhd = Self.entries(vhdx: false).map(\.file), vhdx = Self.entries(vhdx: true).map(\.file)
        #expect(vhd.count >= 9, "VHD entries: \(vhd)")
        #expect(vhdx.count >= 10, "VHDX entries: \(vhdx)")
    }

    @Test(arguments: VHDCorpusTests.entries(vhdx: false))
    func vhdEntryMeetsManifest(_ entry: Corpus.Entry) throws {
        guard let corpus = Corpus.load() else { return }
        try Self.check(entry, in: corpus.directory)
    }

    @Test(arguments: VHDCorpusTests.entries(vhdx: true))
    func vhdxEntryMeetsManifest(_ entry: Corpus.Entry) throws {
        guard let corpus = Corpus.load() else { return }
        try Self.check(entry, in: corpus.directory)
    }
}
