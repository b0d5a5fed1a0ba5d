import Foundation
import KDCTExport
import KDCTFormats
import KDCTTestSupport
import Testing

@Suite("Export transfers against a real sshd")
struct ExportTransferTests {
    @Test("upload by identity file; the arrived file's SHA-256 equals the local one")
    func uploadByKey() throws {
        let server = try TestSSHServer()
        let local = TemporaryDirectory.self
        let work = try local.init("kdct-export")
        let source = work.file("disk.raw")
        try writeRandomFile(source, size: 5 << 20 + 12345)
        var options = ExportOptions()
        options.connection = try server.options()
        let result = try DiskExporter.export(localPath: source, to: server.location("disk.raw"), options: options)
        let arrived = server.remoteDirectory + "/disk.raw"
        #expect(try fileSHA256(arrived) == fileSHA256(source))
        #expect(result.sha256 == (try fileSHA256(source)))
        #expect(result.verification == .remoteCommand)
        #expect(result.flushed)
        #expect(result.authentication.contains("identity file"))
        #expect(!FileManager.default.fileExists(atPath: DiskExporter.temporaryPath(for: arrived)))
    }
}
