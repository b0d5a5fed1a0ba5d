import Foundation
import Testing
@testable import KDCTFormats
import KDCTTestSupport

/// Hostile QCOW2 headers and tables: each must end in a clear error naming the field, never a crash or zeros.
@Suite struct QCOW2HostileTests {
    /// A valid v3 header for a 64 MiB image with 64 KiB clusters, in a buffer of one cluster.
    static func validHeader() -> ByteWriter {
        var w = ByteWriter(count: 65536)
        w.put([0x51, 0x46, 0x49, 0xFB], at: 0)
        w.u32be(3, at: 4)
        w.u32be(16, at: 20)              // cluster_bits
        w.u64be(64 << 20, at: 24)        // size
        w.u32be(1, at: 36)               // l1_size
        w.u64be(0x30000, at: 40)         // l1_table_offset
        w.u64be(0x10000, at: 48)         // refcount_table_offset
        w.u32be(1, at: 56)
        w.u32be(4, at: 96)               // refcount_order
        w.u32be(112, at: 100)            // header_length
        return w
    }

    func decode(_ w: ByteWriter, fileSize: UInt64 = 0x40000) throws -> QCOW2Header {
        try QCOW2Header.decode(w.bytes, fileSize: fileSize, limits: ImageLimits())
    }

    func expectError(_ kind: KDCTError.Code, field: String, _ mutate: (inout ByteWriter) -> Void,
                     fileSize: UInt64 = 0x40000, sourceLocation: SourceLocation = #_sourceLocation) {
        var w = Self.validHeader()
        mutate(&w)
        do {
            _ = try decode(w, fileSize: fileSize)
            Issue.record("accepted a header with a bad \(field)", sourceLocation: sourceLocation)
        } catch let error as KDCTError {
            #expect(error.code == kind, "\(error)", sourceLocation: sourceLocation)
            #expect(error.field == field || error.message.contains(field), "\(error) should name \(field)",
                    sourceLocation: sourceLocation)
        } catch {
            Issue.record("unexpected error \(error)", sourceLocation: sourceLocation)
        }
    }

    @Test func validHeaderDecodes() throws {
        let header = try decode(Self.validHeader())
        #expect(header.clusterSize == 65536)
        #expect(header.size == 64 << 20)
        #expect(header.version == 3)
    }

    @Test func hostileHeaders() {
        expectError(.corrupt, field: "cluster_bits") { $0.u32be(8, at: 20) }
        expectError(.corrupt, field: "cluster_bits") { $0.u32be(22, at: 20) }
        expectError(.corrupt, field: "cluster_bits") { $0.u32be(0xFFFF_FFFF, at: 20) }
        expectError(.unsupported, field: "version") { $0.u32be(4, at: 4) }
        expectError(.unsupported, field: "crypt_method") { $0.u32be(1, at: 32) }
        expectError(.unsupported, field: "incompatible_features") { $0.u64be(1 << 9, at: 72) }
        expectError(.unsupported, field: "data_file") { $0.u64be(1 << 2, at: 72) }
        expectError(.corrupt, field: "refcount_order") { $0.u32be(7, at: 96) }
        expectError(.corrupt, field: "header_length") { $0.u32be(50, at: 100) }
        expectError(.corrupt, field: "header_length") { $0.u32be(0x20000, at: 100) }
        expectError(.unsupported, field: "compression_type") { $0.u8(2, at: 104); $0.u64be(1 << 3, at: 72) }
        expectError(.corrupt, field: "compression_type") { $0.u8(1, at: 104) }
        expectError(.corrupt, field: "l1_size") { $0.u64be(1 << 40, at: 24) }                 // L1 too small
        expectError(.limitExceeded, field: "l1_size * 8") { $0.u64be(1 << 45, at: 24); $0.u32be(1 << 23, at: 36) }
        expectError(.limitExceeded, field: "size") { $0.u64be(UInt64.max, at: 24) }
        expectError(.corrupt, field: "l1_table_offset") { $0.u64be(0x30001, at: 40) }          // unaligned
        expectError(.corrupt, field: "l1_table_offset") { $0.u64be(0x7FFF_FFFF_FFFF_0000, at: 40) } // past EOF
        expectError(.corrupt, field: "l1_table_offset") { $0.u64be(0xFFFF_FFFF_FFFF_0000, at: 40) } // overflow
        expectError(.limitExceeded, field: "nb_snapshots") { $0.u32be(1 << 20, at: 60); $0.u64be(0x20000, at: 64) }
        expectError(.corrupt, field: "backing_file_size") { $0.u64be(200, at: 8); $0.u32be(5000, at: 16) }
        expectError(.corrupt, field: "backing_file_offset") { $0.u64be(65530, at: 8); $0.u32be(100, at: 16) }
        expectError(.corrupt, field: "header extension") { $0.u32be(0xE279_2ACA, at: 112); $0.u32be(0xFFFF_FF00, at: 116) }
        expectError(.invalidFormat, field: "magic") { $0.u8(0, at: 0) }
    }

    @Test func truncatedHeaderIsAnError() {
        let bytes = Array(Self.validHeader().bytes.prefix(50))
        #expect(throws: KDCTError.self) { try QCOW2Header.decode(bytes, fileSize: 50, limits: ImageLimits()) }
    }

    /// Patches the first L2 entry of a qemu-made image, then expects a read of guest offset 0 to fail naming it.
    func corruptFirstL2Entry(_ value: UInt64) throws -> (String, TemporaryDirectory) {
        let dir = try TemporaryDirectory()
        let raw = try TestPattern.writeRaw(to: dir.file("p.raw"), size: 4 << 20)
        let image = dir.file("bad.qcow2")
        _ = try qemuImg("convert", "-O", "qcow2", raw, image)
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: image))
        defer { try? handle.close() }
        try handle.seek(toOffset: 40)
        let l1Offset = handle.readData(ofLength: 8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        try handle.seek(toOffset: l1Offset)
        let l2Offset = handle.readData(ofLength: 8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) } & QCOW2Entry.offsetMask
        try handle.seek(toOffset: l2Offset)
        handle.write(Data((0..<8).map { UInt8(truncatingIfNeeded: value >> UInt64(56 - 8 * $0)) }))
        return (image, dir)
    }

    @Test func dataPointerPastEndOfFile() throws {
        let (image, dir) = try corruptFirstL2Entry(0x8000_0000_7000_0000)
        let device = try ImageOpener.open(image)
        do {
            _ = try device.readBytes(at: 0, count: 512)
            Issue.record("read a cluster past the end of the file")
        } catch let error as KDCTError {
            #expect(error.code == .corrupt)
            #expect(error.description.contains("past the end of the file"))
            #expect(error.description.contains("guest offset 0"))
            #expect(error.field?.contains("L2 table 0 entry 0") == true)
        }
        // The converter fails the same way and leaves no output.
        let out = dir.file("out.qcow2")
        #expect(throws: KDCTError.self) { try convertImage(image, to: out, format: .qcow2) }
        #expect(!FileManager.default.fileExists(atPath: out))
    }

    @Test func unalignedDataPointer() throws {
        let (image, dir) = try corruptFirstL2Entry(0x8000_0000_0001_0200)
        do {
            _ = try ImageOpener.open(image).readBytes(at: 0, count: 512)
            Issue.record("read through an unaligned data pointer")
        } catch let error as KDCTError {
            #expect(error.code == .corrupt)
            #expect(error.message.contains("not cluster-aligned"))
        }
        _ = dir
    }

    @Test func garbageCompressedCluster() throws {
        // A compressed descriptor pointing at the header cluster: it does not inflate to a cluster.
        let (image, dir) = try corruptFirstL2Entry(0x4000_0000_0000_0000 | 200)
        do {
            _ = try ImageOpener.open(image).readBytes(at: 0, count: 65536)
            Issue.record("garbage compressed cluster read")
        } catch let error as KDCTError {
            #expect(error.code == .corrupt)
            #expect(error.message.contains("inflate"))
        }
        _ = dir
    }
}
