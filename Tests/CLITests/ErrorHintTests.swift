import Foundation
import KDCTFormats
import KDCTTestSupport
import Testing

/// The CLI adds its own advice (a flag) to library errors, once: the libraries never mention flags.
@Suite struct ErrorHintTests {
    @Test func anExistingDestinationNamesForceOnce() throws {
        let dir = try TemporaryDirectory()
        let destination = dir.file("out.qcow2")
        try Data("keep".utf8).write(to: URL(fileURLWithPath: destination))
        let result = try CLI.run(["convert", "-O", "qcow2", Fixtures.path("pattern.vmdk"), destination])
        #expect(result.status == 1)
        #expect(result.stderr.hasPrefix("kdct-native: \(destination): already exists"), "\(result.stderr)")
        #expect(result.stderr.components(separatedBy: "--force").count == 2, "one hint: \(result.stderr)")
        #expect(try String(contentsOfFile: destination, encoding: .utf8) == "keep")
    }

    @Test func aRefusedReferenceNamesTheReferencesOption() throws {
        let dir = try TemporaryDirectory()
        let inner = try TemporaryDirectory()
        try convertImage(Fixtures.path("pattern.raw"), to: inner.file("base.qcow2"), format: .qcow2)
        let child = dir.file("child.qcow2")
        try qemuImg("create", "-f", "qcow2", "-u", "-b", inner.file("base.qcow2"), "-F", "qcow2", child, "2M")
        let result = try CLI.run(["info", "--output", "json", child])
        #expect(result.status == 0, "info reports references without opening them: \(result.stderr)")
        let refused = try CLI.run(["convert", child, dir.file("out.raw")])
        #expect(refused.status == 1)
        #expect(refused.stderr.contains("reference refused") && refused.stderr.contains("--references"), "\(refused.stderr)")
        #expect(refused.stderr.components(separatedBy: "--references").count <= 3, "no repeated hint: \(refused.stderr)")
    }
}
