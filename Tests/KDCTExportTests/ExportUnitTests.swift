import Crypto
import Foundation
@testable import KDCTExport
import KDCTFormats
import KDCTTestSupport
import Testing

@Suite("Export building blocks (no server)")
struct ExportUnitTests {
    @Test("scp-style destinations")
    func scpStyle() throws {
        let a = try RemoteLocation.parse(scpStyle: "root@kvm1:/var/lib/libvirt/images/vm.qcow2", port: 2222)
        #expect(a.endpoint == SSHEndpoint(user: "root", host: "kvm1", port: 2222))
        #expect(a.path == "/var/lib/libvirt/images/vm.qcow2")
        #expect(a.endpoint.knownHostsName == "[kvm1]:2222")
        let b = try RemoteLocation.parse(scpStyle: "admin@[fe80::1]:disk.raw")
        #expect(b.endpoint.host == "fe80::1" && b.path == "disk.raw" && b.endpoint.knownHostsName == "fe80::1")
        let c = try RemoteLocation.parse(scpStyle: "me@host:")
        #expect(c.path == ".")
        let d = try RemoteLocation.parse(scpStyle: "host:images/")
        #expect(d.endpoint.user == RemoteLocation.localUserName() && d.path == "images/")
        for bad in ["just-a-file.raw", "user@:path", "[::1/x", "@host:x"] {
            #expect(throws: KDCTError.self, "\(bad)") { try RemoteLocation.parse(scpStyle: bad) }
        }
    }

    @Test("sftp:// URLs")
    func urls() throws {
        let a = try RemoteLocation.parse(url: "sftp://root@kvm1:2200/var/lib/libvirt/images/vm%20one.qcow2")
        #expect(a.endpoint == SSHEndpoint(user: "root", host: "kvm1", port: 2200))
        #expect(a.path == "/var/lib/libvirt/images/vm one.qcow2")
        #expect(a.urlString == "sftp://root@kvm1:2200/var/lib/libvirt/images/vm one.qcow2")
        let b = try RemoteLocation.parse(url: "SFTP://u@[::1]/~/disk.raw")
        #expect(b.endpoint.host == "::1" && b.endpoint.port == 22 && b.path == "disk.raw")
        #expect(RemoteLocation.isURL("sftp://x/y") && !RemoteLocation.isURL("/tmp/sftp://x"))
        for bad in ["sftp://host", "sftp://host/", "sftp://u@h:99999/x", "sftp://u@h:port/x", "sftp://u;fingerprint=x@h/x",
                    "sftp://u@h/%zz", "sftp://u@h/a%00b", "http://u@h/x", "sftp://u\n@h/x"] {
            #expect(throws: KDCTError.self, "\(bad)") { try RemoteLocation.parse(url: bad) }
        }
    }

    @Test("Base64, hex and shell quoting")
    func encodings() {
        for (plain, encoded) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE=")] {
            #expect(TextEncoding.base64(Array(plain.utf8)) == encoded)
            #expect(TextEncoding.decodeBase64(encoded) == Array(plain.utf8))
        }
        #expect(TextEncoding.base64(Array("fo".utf8), padded: false) == "Zm8")
        #expect(TextEncoding.decodeBase64("Zm9v\nYg==") == Array("foob".utf8))
        #expect(TextEncoding.decodeBase64("Zm9v!") == nil)
        var generator = SystemRandomNumberGenerator()
        for length in 0..<40 {
            let bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
            #expect(TextEncoding.decodeBase64(TextEncoding.base64(bytes)) == bytes)
        }
        #expect(TextEncoding.hex([0, 15, 255]) == "000fff")
        #expect(TextEncoding.shellQuoted("it's a file") == "'it'\\''s a file'")
    }

    @Test("OpenSSH fingerprint format")
    func fingerprint() {
        let key = HostKey(type: .ed25519, blob: Array("not really a key".utf8))
        let expected = "SHA256:" + TextEncoding.base64(SHA256.hash(data: key.blob), padded: false)
        #expect(key.fingerprint == expected)
        #expect(!key.fingerprint.hasSuffix("="))
        #expect(key.fingerprint.count == 7 + 43)
    }

    @Test("the written-content digest equals SHA-256 of the assembled file, header written last included")
    func writtenDigest() throws {
        // A qcow2-like pattern: data from 64 KiB on with gaps, a header written last at 0, a final length.
        var file = [UInt8](repeating: 0, count: 1 << 20)
        let digest = WrittenContentDigest(name: "t", hashFromZero: false)
        func write(_ bytes: [UInt8], at offset: Int) throws {
            file.replaceSubrange(offset..<(offset + bytes.count), with: bytes)
            try bytes.withUnsafeBytes { try digest.record($0, at: UInt64(offset)) }
        }
        try write([UInt8](repeating: 7, count: 70_000), at: 65_536)
        try write([UInt8](repeating: 9, count: 1000), at: 300_000)
        try write([UInt8](repeating: 1, count: 104), at: 0)
        try digest.setLength(1 << 20)
        let ranges = digest.finish()
        #expect(ranges.count == 2)
        for range in ranges {
            let slice = file[Int(range.start)..<Int(range.start + range.length)]
            #expect(range.sha256 == TextEncoding.hex(SHA256.hash(data: Array(slice))))
        }
        // Going back over data already hashed is refused, not mis-hashed.
        #expect(throws: KDCTError.self) { try write([1], at: 100_000) }
        #expect(throws: KDCTError.self) { try digest.setLength(1000) }

        // From zero (exports): one range, holes included.
        let whole = WrittenContentDigest(name: "t", hashFromZero: true)
        try [UInt8](repeating: 5, count: 10).withUnsafeBytes { try whole.record($0, at: 5000) }
        try whole.setLength(8192)
        var expected = [UInt8](repeating: 0, count: 8192)
        expected.replaceSubrange(5000..<5010, with: [UInt8](repeating: 5, count: 10))
        #expect(whole.finish() == [RangeDigest(start: 0, length: 8192, sha256: TextEncoding.hex(SHA256.hash(data: expected)))])
        // Nothing written at all: the zeros of the declared length.
        let empty = WrittenContentDigest(name: "t", hashFromZero: false)
        try empty.setLength(3)
        #expect(empty.finish().first?.sha256 == TextEncoding.hex(SHA256.hash(data: [0, 0, 0])))
    }

    @Test("remote hashing commands and sha256sum output parsing")
    func hashCommands() {
        let prelude = "if command -v openssl >/dev/null 2>&1; then h() { openssl dgst -sha256 -r; }; else h() { sha256sum; }; fi; "
        #expect(RemoteHasher.command(path: "/a b/c'd", ranges: [(0, 100)], fileSize: 100) == prelude + "h < '/a b/c'\\''d'")
        #expect(RemoteHasher.command(path: "f", ranges: [(0, 10), (10, 90)], fileSize: 100)
                == prelude + "tail -c +1 < 'f' | head -c 10 | h && tail -c +11 < 'f' | h")
        // Both tools, run here on known data, print what the parser accepts.
        for tool in [["sha256sum"], ["openssl", "dgst", "-sha256", "-r"]] {
            let text = (try? runProcess(tool, stdin: Data("abc".utf8)))?.stdout ?? ""
            #expect(RemoteHasher.digest(inLine: Substring(text.split(separator: "\n").first ?? ""))
                    == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "\(tool): \(text)")
        }
        let hex = String(repeating: "ab", count: 32)
        #expect(RemoteHasher.digest(inLine: Substring(hex + "  -")) == hex)
        #expect(RemoteHasher.digest(inLine: Substring(hex)) == hex)
        #expect(RemoteHasher.digest(inLine: Substring(hex.uppercased() + "  -")) == nil)
        #expect(RemoteHasher.digest(inLine: Substring(hex + " *stdin")) == hex)
        #expect(RemoteHasher.digest(inLine: "sha256sum: not found") == nil)
        #expect(RemoteHasher.digest(inLine: Substring(hex + "x")) == nil)
    }

    @Test("encrypted private keys are recognised without a passphrase")
    func encryptedKeyDetection() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("kdct-keys-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        for (name, passphrase, format) in [("plain", "", nil), ("secret", "secret-pw", nil), ("pem", "secret-pw", "PEM"), ("pemplain", "", "PEM")] {
            let path = directory + "/" + name
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/ssh-keygen")
            process.arguments = ["-q", "-t", name.hasPrefix("pem") ? "ecdsa" : "ed25519"] + (format.map { ["-m", $0] } ?? [])
                + ["-N", passphrase, "-f", path]
            try process.run()
            process.waitUntilExit()
            #expect(process.terminationStatus == 0)
            #expect(IdentityFileInspector.isEncrypted(path: path) == !passphrase.isEmpty, "\(name)")
        }
    }
}
