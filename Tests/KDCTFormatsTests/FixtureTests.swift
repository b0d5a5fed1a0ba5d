import Foundation
import Testing
@testable import KDCTFormats

/// The committed fixtures (Fixtures/images, made by Fixtures/make-fixtures.sh) read to the SHA-256 qemu-img gave,
/// so the readers are checked even where qemu-img is absent.
@Suite struct FixtureTests {
    static let fixtureDirectory: String = {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures").path
    }()

    /// (file, expected guest SHA-256) from Fixtures/SHA256SUMS.
    static let expected: [(String, String)] = {
        guard let text = try? String(contentsOfFile: fixtureDirectory + "/SHA256SUMS", encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { line in
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            return parts.count == 2 ? (String(parts[1]), String(parts[0])) : nil
        }
    }()

    @Test func manifestIsPresent() {
        #expect(Self.expected.count >= 15, "Fixtures/SHA256SUMS missing or short")
    }

    @Test(arguments: expected.map(\.0))
    func fixtureContentMatchesQemu(_ name: String) throws {
        let path = Self.fixtureDirectory + "/images/" + name
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
