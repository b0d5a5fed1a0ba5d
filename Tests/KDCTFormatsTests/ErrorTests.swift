import Foundation
import Testing
import KDCTFormats
import KDCTTestSupport

/// The error type: codes compare by identifier, the one-line description renders every location field in a fixed
/// order, and context is added as fields (referrers), not by editing the message.
@Suite struct ErrorTests {
    @Test func descriptionRendersTheLocationInOrder() {
        var error = KDCTError(.corrupt, "data cluster lies past the end of the file", file: "disk.qcow2",
                              field: "L2 table 0 entry 3", guestOffset: 65536, hostOffset: 0x30000)
        #expect(error.description == "disk.qcow2: corrupt image: data cluster lies past the end of the file at guest offset 65536 "
                    + "at file offset 0x30000 (L2 table 0 entry 3)")
        error = error.referred(by: "mid.qcow2", as: .backingFile).referred(by: "top.vmdk", as: .parent)
        #expect(error.referrers == [KDCTError.Referrer(role: .backingFile, image: "mid.qcow2"),
                                    KDCTError.Referrer(role: .parent, image: "top.vmdk")])
        #expect(error.description.hasSuffix("(backing-file of mid.qcow2) (parent of top.vmdk) (L2 table 0 entry 3)"))

        // The field is not repeated when the message names it; errno and the cause come last.
        let io = KDCTError(.io, "pread of l1_size bytes failed", file: "a.img", field: "l1_size", errno: EIO,
                           cause: KDCTError(.truncated, "inner"))
        #expect(io.description == "a.img: I/O error: pread of l1_size bytes failed (\(String(cString: strerror(EIO)))) "
                    + "(truncated image: inner)")
        #expect(KDCTError.limit("l1_size", value: 9, limit: 8).description == "limit exceeded: l1_size is 9, above the limit of 8")
    }

    @Test func codesCompareByIdentifier() {
        let code = KDCTError(.limitExceeded, "x").code
        #expect(code == .limitExceeded && code != .corrupt)
        #expect(code.rawValue == "limit-exceeded" && code.summary == "limit exceeded" && "\(code)" == "limit-exceeded")
        #expect(Set([KDCTError.Code.corrupt, .corrupt, .truncated]).count == 2)
        // A switch over a code needs `default`; the expression patterns match by identifier.
        switch code {
        case .corrupt: Issue.record("matched the wrong code")
        case .limitExceeded: break
        default: Issue.record("did not match")
        }
        #expect(KDCTError(.io, "x").inFile("a").inFile("b").file == "a")
    }

    /// A referenced image that fails to open: the error names that file, and lists the image naming it as a
    /// referrer, with the same one line as before (`... (backing-file of child.qcow2)`).
    @Test func aBrokenBackingFileNamesBothFiles() throws {
        let dir = try TemporaryDirectory()
        let base = dir.file("base.qcow2")
        try Data(repeating: 0x5A, count: 4096).write(to: URL(fileURLWithPath: base))
        let child = dir.file("child.qcow2")
        try qemuImg("create", "-f", "qcow2", "-u", "-b", "base.qcow2", "-F", "qcow2", child, "1M")
        let error = try #require(throws: KDCTError.self) { try ImageOpener.open(child) }
        #expect(error.code == .invalidFormat)
        #expect(error.file?.hasSuffix("/base.qcow2") == true, "the error names the backing file: \(error)")
        #expect(error.referrers == [KDCTError.Referrer(role: .backingFile, image: child)], "\(error)")
        #expect(error.description.contains("(backing-file of \(child))"), "\(error)")
        #expect(!error.message.contains(child), "the referrer is a field, not patched into the message: \(error.message)")
    }
}
