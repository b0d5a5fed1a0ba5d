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
        // Chunked: the digests cut at every chunk boundary (counted from the first write), gaps hashed as zeros.
        let chunked = WrittenContentDigest(name: "t", hashFromZero: false, chunkSize: 100_000)
        var image = [UInt8](repeating: 0, count: 450_000)
        for (offset, length, value) in [(65_536, 150_000, 3), (300_000, 20_000, 4)] {
            let bytes = [UInt8](repeating: UInt8(value), count: length)
            image.replaceSubrange(offset..<(offset + length), with: bytes)
            try bytes.withUnsafeBytes { try chunked.record($0, at: UInt64(offset)) }
        }
        let header = [UInt8](repeating: 9, count: 512)
        image.replaceSubrange(0..<512, with: header)
        try header.withUnsafeBytes { try chunked.record($0, at: 0) }
        try chunked.setLength(450_000)
        let pieces = chunked.finish()
        #expect(pieces.map(\.start) == [0, 65_536, 165_536, 265_536, 365_536])
        #expect(pieces.last?.end == 450_000)
        for piece in pieces {
            #expect(piece.sha256 == TextEncoding.hex(SHA256.hash(data: Array(image[Int(piece.start)..<Int(piece.end)]))))
        }
        // Nothing written at all: the zeros of the declared length.
        let empty = WrittenContentDigest(name: "t", hashFromZero: false)
        try empty.setLength(3)
        #expect(empty.finish().first?.sha256 == TextEncoding.hex(SHA256.hash(data: [0, 0, 0])))
    }

    @Test("the remote hashing command, run here by sh, prints the SHA-256 of each range: dd for aligned ranges and loops, tail|head otherwise")
    func hashCommands() throws {
        let directory = try TemporaryDirectory("kdct-hash")
        let path = directory.file("it's a file")
        var bytes = [UInt8](repeating: 0, count: 5 << 20 + 777)
        var state: UInt64 = 12345
        for index in bytes.indices {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            bytes[index] = UInt8(truncatingIfNeeded: state >> 33)
        }
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        let size = UInt64(bytes.count)
        let layouts: [[ByteRange]] = [
            ChunkLayout.chunks(from: 0, to: size, chunkSize: 1 << 20),                  // loop of 1 MiB chunks, then the tail
            [ByteRange(start: 0, length: 65536)] + ChunkLayout.chunks(from: 65536, to: size, chunkSize: 1 << 20),
            [ByteRange(start: 0, length: 1000), ByteRange(start: 1000, length: 4096), ByteRange(start: 5096, length: size - 5096)],
            [ByteRange(start: 0, length: size)],
        ]
        for ranges in layouts {
            let command = RemoteHasher.command(path: path, ranges: ranges)
            let result = try runProcess(["sh", "-c", command])
            #expect(result.status == 0, "\(command): \(result.stderr)")
            let printed = result.stdout.split(separator: "\n").map { RemoteHasher.digest(inLine: $0) }
            let expected = ranges.map { TextEncoding.hex(SHA256.hash(data: bytes[Int($0.start)..<Int($0.end)])) }
            #expect(printed == expected, "\(command)")
        }
        #expect(RemoteHasher.command(path: path, ranges: layouts[0]).contains("while"))
        #expect(RemoteHasher.command(path: path, ranges: layouts[2]).contains("; p 0 1000 0 | h"), "no block size: tail | head")
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

    @Test("libssh2's AES-CTR runs through the batched keystream, which agrees byte for byte with OpenSSL's own AES-CTR")
    func batchedCTR() {
        #expect(SSHLibrary.usesBatchedCTR)
    }

    @Test("chunk layout: 64 MiB chunks, at most 2048 of them; cancellation tokens follow their parent")
    func chunksAndTokens() {
        #expect(ChunkLayout.chunkSize(forFileSize: 1 << 30) == 64 << 20)
        #expect(ChunkLayout.chunks(ofFileSize: (1 << 30) + 5).count == 17)
        #expect(ChunkLayout.chunks(ofFileSize: 0).isEmpty)
        let huge: UInt64 = 10 << 40
        #expect(ChunkLayout.chunks(ofFileSize: huge).count <= 2048)
        #expect(ChunkLayout.chunkSize(forFileSize: huge) % (64 << 20) == 0)
        let parent = CancellationToken()
        let child = CancellationToken(parent: parent)
        #expect(!child.isCancelled)
        parent.cancel(signal: SIGTERM)
        #expect(child.isCancelled && child.signal == SIGTERM)
        #expect(child.cancellationError().message.contains("SIGTERM"))
        let lone = CancellationToken()
        lone.cancel()
        lone.cancel(signal: SIGINT)
        #expect(lone.isCancelled && lone.signal == nil, "the first cancellation wins")
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
