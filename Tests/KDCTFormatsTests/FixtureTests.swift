import Foundation
import Testing
@testable import KDCTFormats
import KDCTTestSupport

/// The committed fixtures (Fixtures/images, made by Fixtures/make-fixtures.sh) read to the SHA-256 qemu-img gave,
/// so the readers are checked even where qemu-img is absent.
@Suite struct FixtureTests {
    static let expected = Fixtures.expectedDigests

    @Test func manifestIsPresent() {
        #expect(Self.expected.count >= 15, "Fixtures/SHA256SUMS missing or short")
    }

    @Test(arguments: expected.map(\.0))
    func fixtureContentMatchesQemu(_ name: String) throws {
        let path = Fixtures.path(name)
        let format = try ImageOpener.detectFormat(ReadOnlyFile(path: path), options: OpenOptions())
        guard ImageOpener.canRead(format) else {
            // Recognition is still required of formats whose reader is not in this build.
            #expect(throws: KDCTError.self) { try ImageOpener.open(path) }
            return
        }
        let want = Self.expected.first { $0.0 == name }?.1
        #expect(try guestSHA256(path) == want, "\(name)")
    }
}
