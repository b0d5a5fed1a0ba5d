import Foundation
import Testing
@testable import KDCTFormats
import KDCTTestSupport

/// Builders for VMDK structures from bytes (the test side of the on-disk layouts), so headers, descriptors and
/// whole small images can be made valid or hostile without qemu.
enum VMDKBytes {
    /// A 512-byte KDMV header.
    static func sparseHeader(version: UInt32 = 1, flags: UInt32 = 3, capacity: UInt64, grainSize: UInt64 = 128,
                             descriptorOffset: UInt64 = 1, descriptorSize: UInt64 = 20, entriesPerTable: UInt32 = 512,
                             redundantGD: UInt64 = 0, gd: UInt64, overhead: UInt64 = 128, compress: UInt16 = 0,
                             newline: [UInt8] = [0x0A, 0x20, 0x0D, 0x0A]) -> [UInt8] {
        var w = ByteWriter(count: 512)
        w.put(Array("KDMV".utf8), at: 0)
        w.u32le(version, at: 4)
        w.u32le(flags, at: 8)
        w.u64le(capacity, at: 12)
        w.u64le(grainSize, at: 20)
        w.u64le(descriptorOffset, at: 28)
        w.u64le(descriptorSize, at: 36)
        w.u32le(entriesPerTable, at: 44)
        w.u64le(redundantGD, at: 48)
        w.u64le(gd, at: 56)
        w.u64le(overhead, at: 64)
        w.put(newline, at: 73)
        w.u16le(compress, at: 77)
        return w.bytes
    }

    /// Descriptor text for an embedded or standalone descriptor.
    static func descriptor(createType: String, extents: [String], cid: String = "12345678", parentCID: String = "ffffffff",
                           parentHint: String? = nil, extra: [String] = []) -> String {
        var lines = ["# Disk DescriptorFile", "version=1", "CID=\(cid)", "parentCID=\(parentCID)", "createType=\"\(createType)\""]
        if let parentHint { lines.append("parentFileNameHint=\"\(parentHint)\"") }
        lines.append("")
        lines += extents
        lines += ["", "# The Disk Data Base", "#DDB", "ddb.adapterType = \"lsilogic\""] + extra
        return lines.joined(separator: "\n") + "\n"
    }

    /// zlib stream (RFC 1950) of `data`: header, raw deflate, Adler-32.
    static func zlib(_ data: [UInt8]) throws -> [UInt8] {
        let compressor = try RawDeflateCompressor()
        var output = [UInt8](repeating: 0, count: data.count + 1024)
        let count = try data.withUnsafeBytes { input in
            try output.withUnsafeMutableBytes { try compressor.compress(input, into: $0) }
        }
        guard let count else { throw KDCTError(.io, "test data did not compress") }
        var a: UInt32 = 1
        var b: UInt32 = 0
        for byte in data {
            a = (a + UInt32(byte)) % 65521
            b = (b + a) % 65521
        }
        let adler = b << 16 | a
        return [0x78, 0x9C] + output[0..<count]
            + [UInt8(adler >> 24), UInt8((adler >> 16) & 0xFF), UInt8((adler >> 8) & 0xFF), UInt8(adler & 0xFF)]
    }

    /// A monolithicSparse KDMV with one grain table: `grains[i]` is the data of grain `i` (nil = unallocated), or
    /// an explicit GTE through `gteOverride`. Layout: header, descriptor (sectors 1-20), GD (21), GT (22-25),
    /// grains from sector 128.
    static func monolithicSparse(capacitySectors: UInt64, grains: [Int: [UInt8]], gteOverride: [Int: UInt32] = [:],
                                 flags: UInt32 = 3, version: UInt32 = 1, parentHint: String? = nil,
                                 parentCID: String = "ffffffff", cid: String = "12345678") -> [UInt8] {
        let grainBytes = 65536
        var file = [UInt8](repeating: 0, count: 128 * 512)
        file.replaceSubrange(0..<512, with: sparseHeader(version: version, flags: flags, capacity: capacitySectors, gd: 21))
        let text = Array(descriptor(createType: "monolithicSparse", extents: ["RW \(capacitySectors) SPARSE \"x.vmdk\""],
                                    cid: cid, parentCID: parentCID, parentHint: parentHint).utf8)
        file.replaceSubrange(512..<(512 + text.count), with: text)
        var gd = ByteWriter(count: 4)
        gd.u32le(22, at: 0)
        file.replaceSubrange((21 * 512)..<(21 * 512 + 4), with: gd.bytes)
        var gt = ByteWriter(count: 2048)
        var nextSector: UInt32 = 128
        for index in grains.keys.sorted() {
            guard let data = grains[index] else { continue }
            gt.u32le(nextSector, at: index * 4)
            var grain = data
            grain += [UInt8](repeating: 0, count: grainBytes - grain.count)
            file += grain
            nextSector += 128
        }
        for (index, value) in gteOverride { gt.u32le(value, at: index * 4) }
        file.replaceSubrange((22 * 512)..<(22 * 512 + 2048), with: gt.bytes)
        return file
    }

    /// A streamOptimized KDMV with the grain directory in the footer: compressed grains with markers, one grain
    /// table, GD, footer and end-of-stream marker.
    static func streamOptimized(capacitySectors: UInt64, grains: [Int: [UInt8]]) throws -> [UInt8] {
        func pad(_ bytes: inout [UInt8]) { bytes += [UInt8](repeating: 0, count: (512 - bytes.count % 512) % 512) }
        func marker(_ sectors: UInt64, type: UInt32) -> [UInt8] {
            var w = ByteWriter(count: 512)
            w.u64le(sectors, at: 0)
            w.u32le(type, at: 12)
            return w.bytes
        }
        var file = sparseHeader(version: 3, flags: 0x30001, capacity: capacitySectors, gd: VMDKSparseHeader.gdAtEnd,
                                compress: 1)
        var text = Array(descriptor(createType: "streamOptimized", extents: ["RW \(capacitySectors) SPARSE \"s.vmdk\""]).utf8)
        pad(&text)
        file += text
        file += [UInt8](repeating: 0, count: 128 * 512 - file.count)
        var gt = ByteWriter(count: 2048)
        for index in grains.keys.sorted() {
            guard let data = grains[index] else { continue }
            gt.u32le(UInt32(file.count / 512), at: index * 4)
            var full = data
            full += [UInt8](repeating: 0, count: 65536 - full.count)
            let compressed = try zlib(full)
            var w = ByteWriter(count: 12)
            w.u64le(UInt64(index) * 128, at: 0)
            w.u32le(UInt32(compressed.count), at: 8)
            var record = w.bytes + compressed
            pad(&record)
            file += record
        }
        file += marker(4, type: 1)
        let gtSector = UInt64(file.count / 512)
        file += gt.bytes
        file += marker(1, type: 2)
        let gdSector = UInt64(file.count / 512)
        var gd = ByteWriter(count: 512)
        gd.u32le(UInt32(gtSector), at: 0)
        file += gd.bytes
        file += marker(1, type: 3)
        file += sparseHeader(version: 3, flags: 0x30001, capacity: capacitySectors, gd: gdSector, compress: 1)
        file += marker(0, type: 0)
        return file
    }

    /// A COWD extent: 4-sector header, GD at sector 4, one grain table at sector 8, grains (of `grainSectors`) after.
    static func cowd(capacitySectors: UInt32, grainSectors: UInt32 = 1, grains: [Int: [UInt8]],
                     gteOverride: [Int: UInt32] = [:], version: UInt32 = 1) -> [UInt8] {
        var header = ByteWriter(count: 2048)
        header.put(Array("COWD".utf8), at: 0)
        header.u32le(version, at: 4)
        header.u32le(3, at: 8)
        header.u32le(capacitySectors, at: 12)
        header.u32le(grainSectors, at: 16)
        header.u32le(4, at: 20)
        let span = UInt32(4096) * grainSectors
        let gdEntries = (capacitySectors + span - 1) / span
        header.u32le(gdEntries, at: 24)
        var file = header.bytes
        var gd = ByteWriter(count: 2048)
        gd.u32le(8, at: 0)
        file += gd.bytes
        var gt = ByteWriter(count: 4096 * 4)
        var next = UInt32(8 + 32)
        var data: [UInt8] = []
        for index in grains.keys.sorted() {
            guard let bytes = grains[index] else { continue }
            gt.u32le(next, at: index * 4)
            data += bytes + [UInt8](repeating: 0, count: Int(grainSectors) * 512 - bytes.count)
            next += grainSectors
        }
        for (index, value) in gteOverride { gt.u32le(value, at: index * 4) }
        file += gt.bytes
        file += data
        return file
    }

    /// Writes `bytes` to `path`.
    static func write(_ bytes: [UInt8], to path: String) throws {
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }
}

/// Header and descriptor decoding from byte arrays: valid, quirky and hostile.
@Suite struct VMDKHeaderTests {
    @Test func descriptorParsesEveryExtentForm() throws {
        let text = """
        # Disk DescriptorFile\r
        version=1\r
        encoding="UTF-8"
        CID=f879aea6
        parentCID=ffffffff
        isNativeSnapshot="no"
        createType="custom"
        parentFileNameHint="base disk.vmdk"

        RW 20480 VMFS "x-flat.vmdk" 0
        RW 100 VMFS "thin-flat.vmdk"
        RDONLY 8 FLAT "with space.vmdk" 16\r
        NOACCESS 4 SPARSE "gone.vmdk"
        RW 2048 ZERO
        RW 64 VMFSSPARSE "x-delta.vmdk"
        RW 64 SESPARSE "x-sesparse.vmdk"
        RW 64 VMFSRDM "x-rdm.vmdk" 0 some-uuid
        this line means nothing
        ddb.adapterType = "lsilogic"
        ddb.virtualHWVersion = "18"
        """
        let descriptor = try VMDKDescriptor.parse(Array(text.utf8), limits: ImageLimits())
        #expect(descriptor.cid == 0xf879aea6)
        #expect(descriptor.parentCID == 0xffffffff)
        #expect(descriptor.createType == "custom")
        #expect(descriptor.parentFileNameHint == "base disk.vmdk")
        #expect(descriptor["ddb.virtualHWVersion"] == "18")
        #expect(descriptor["encoding"] == "UTF-8")
        let e = descriptor.extents
        #expect(e.count == 8)
        #expect(e[0] == .init(access: .readWrite, sectors: 20480, type: .vmfs, fileName: "x-flat.vmdk", offset: 0, lineNumber: 10))
        #expect(e[1].type == .vmfs && e[1].offset == 0)
        #expect(e[2].access == .readOnly && e[2].fileName == "with space.vmdk" && e[2].offset == 16)
        #expect(e[3].access == .noAccess)
        #expect(e[4].type == .zero && e[4].fileName == nil && e[4].sectors == 2048)
        #expect(e[5].type == .vmfsSparse && e[6].type == .seSparse && e[7].type == .vmfsRDM)
        #expect(descriptor.ignoredLines.map(\.0) == [18])
    }

    @Test(arguments: [
        ("RW 0 FLAT \"a\" 0", KDCTError.Code.corrupt),          // zero size
        ("RW -5 FLAT \"a\" 0", .corrupt),                       // negative size
        ("RW 99999999999999999999999 FLAT \"a\" 0", .corrupt),  // size overflows
        ("RW 10 SPARSEE \"a\"", .unsupported),                  // unknown type: never silently dropped
        ("RW 10 SPARSE \"a\" 7", .corrupt),                     // offset on a sparse line
        ("RW 10 FLAT \"a\" x", .corrupt),                       // non-numeric offset
        ("RW 10 FLAT \"unterminated", .corrupt),
        ("RW 10 ZERO \"a\"", .corrupt),                         // ZERO names no file
        ("RW 10", .corrupt),
        ("RW 10 FLAT", .corrupt),
        ("RW 10 FLAT \"\" 0", .corrupt),
    ])
    func malformedExtentLinesAreErrors(line: String, kind: KDCTError.Code) throws {
        let text = "version=1\ncreateType=\"custom\"\n\(line)\n"
        let error = #expect(throws: KDCTError.self) { try VMDKDescriptor.parse(Array(text.utf8), limits: ImageLimits()) }
        #expect(error?.code == kind, "\(line): \(String(describing: error))")
        #expect(error?.field == "extent line 3", "\(line): \(String(describing: error))")
    }

    @Test func descriptorValueErrors() throws {
        let badCID = "version=1\nCID=xyz\ncreateType=\"monolithicFlat\"\n"
        #expect(throws: KDCTError.self) { try VMDKDescriptor.parse(Array(badCID.utf8), limits: ImageLimits()) }
        let badVersion = "version=9\ncreateType=\"monolithicFlat\"\n"
        let error = #expect(throws: KDCTError.self) { try VMDKDescriptor.parse(Array(badVersion.utf8), limits: ImageLimits()) }
        #expect(error?.code == .unsupported)
        let notDescriptor = "hello world\nthis is text\n"
        let error2 = #expect(throws: KDCTError.self) { try VMDKDescriptor.parse(Array(notDescriptor.utf8), limits: ImageLimits()) }
        #expect(error2?.code == .invalidFormat)
    }

    @Test func descriptorExtentCountIsLimitedEarly() throws {
        // 100 000 extent lines: fails at line maxExtents + 1 without parsing the rest.
        let text = "version=1\ncreateType=\"custom\"\n" + String(repeating: "RW 1 ZERO\n", count: 100_000)
        var limits = ImageLimits()
        limits.maxDescriptorBytes = 4 << 20
        let error = #expect(throws: KDCTError.self) { try VMDKDescriptor.parse(Array(text.utf8), limits: limits) }
        #expect(error?.code == .limitExceeded)
        #expect(error?.field == "extents")
        #expect(error?.message.contains("4096") == true)
        // Text past the descriptor size limit is refused before parsing.
        limits.maxDescriptorBytes = 1000
        let error2 = #expect(throws: KDCTError.self) { try VMDKDescriptor.parse(Array(text.utf8), limits: limits) }
        #expect(error2?.code == .limitExceeded)
    }

    @Test func sparseHeaderDecodesAndValidates() throws {
        let bytes = VMDKBytes.sparseHeader(capacity: 20480, redundantGD: 21, gd: 26)
        let header = try VMDKSparseHeader.decode(bytes)
        #expect(header.version == 1 && header.flags == 3 && header.capacity == 20480 && header.grainSize == 128)
        #expect(header.descriptorOffset == 1 && header.descriptorSize == 20 && header.entriesPerGrainTable == 512)
        #expect(header.redundantGrainDirectoryOffset == 21 && header.grainDirectoryOffset == 26 && header.overhead == 128)
        #expect(!header.isCompressed && !header.hasMarkers && !header.uncleanShutdown)
        let layout = try header.layout(fileSize: 128 * 512, limits: ImageLimits())
        #expect(layout.capacityBytes == 20480 * 512 && layout.grainBytes == 65536 && layout.directoryEntries == 1)
        #expect(layout.tableBytes == 2048 && layout.grainCount == 160)
    }

    @Test(arguments: [
        ("version 4", VMDKBytes.sparseHeader(version: 4, capacity: 2048, gd: 26), KDCTError.Code.unsupported, "version"),
        ("unknown flag", VMDKBytes.sparseHeader(flags: 3 | 1 << 9, capacity: 2048, gd: 26), .unsupported, "flags"),
        ("text-mode transfer", VMDKBytes.sparseHeader(capacity: 2048, gd: 26, newline: [0x0A, 0x20, 0x0A, 0x0A]), .corrupt, "newline check bytes"),
        ("compression 2", VMDKBytes.sparseHeader(capacity: 2048, gd: 26, compress: 2), .unsupported, "compressAlgorithm"),
        ("capacity 0", VMDKBytes.sparseHeader(capacity: 0, gd: 26), .corrupt, "capacity"),
        ("capacity overflow", VMDKBytes.sparseHeader(capacity: UInt64.max / 100, gd: 26), .corrupt, "capacity"),
        ("capacity over limit", VMDKBytes.sparseHeader(capacity: 1 << 40, gd: 26), .limitExceeded, "capacity"),
        ("grain size 0", VMDKBytes.sparseHeader(capacity: 2048, grainSize: 0, gd: 26), .corrupt, "grainSize"),
        ("grain size 3", VMDKBytes.sparseHeader(capacity: 2048, grainSize: 3, gd: 26), .corrupt, "grainSize"),
        ("grain size 2^40", VMDKBytes.sparseHeader(capacity: 2048, grainSize: 1 << 40, gd: 26), .limitExceeded, "grain size"),
        ("GT size 0", VMDKBytes.sparseHeader(capacity: 2048, entriesPerTable: 0, gd: 26), .corrupt, "numGTEsPerGT"),
        ("GT size 513", VMDKBytes.sparseHeader(capacity: 2048, entriesPerTable: 513, gd: 26), .corrupt, "numGTEsPerGT"),
        ("GT size 2^31", VMDKBytes.sparseHeader(capacity: 2048, entriesPerTable: 1 << 31, gd: 26), .corrupt, "numGTEsPerGT"),
        ("GD size over limit", VMDKBytes.sparseHeader(capacity: 1 << 36, grainSize: 1, entriesPerTable: 1, gd: 26), .limitExceeded, "grain directory size"),
        ("GD past EOF", VMDKBytes.sparseHeader(capacity: 2048, gd: 1 << 40), .corrupt, "gdOffset"),
        ("GD at 0", VMDKBytes.sparseHeader(capacity: 2048, gd: 0), .corrupt, "gdOffset"),
        ("overhead past EOF", VMDKBytes.sparseHeader(capacity: 2048, gd: 26, overhead: 1 << 20), .truncated, "overHead"),
    ])
    func hostileSparseHeadersAreRefused(label: String, bytes: [UInt8], kind: KDCTError.Code, field: String) throws {
        let header = try VMDKSparseHeader.decode(bytes)
        let error = #expect(throws: KDCTError.self, "\(label)") {
            try header.layout(fileSize: 128 * 512, limits: ImageLimits())
        }
        #expect(error?.code == kind, "\(label): \(String(describing: error))")
        #expect(error?.field == field, "\(label): \(String(describing: error))")
    }

    @Test func streamFooterChecks() throws {
        let file = try VMDKBytes.streamOptimized(capacitySectors: 2048, grains: [0: [1, 2, 3]])
        let trailer = Array(file.suffix(1536))
        let footer = try VMDKStreamMarkers.footer(fromTrailer: trailer)
        #expect(footer.grainDirectoryOffset != VMDKSparseHeader.gdAtEnd && footer.isCompressed && footer.hasMarkers)

        var badMarker = trailer
        badMarker[12] = 2
        #expect((try? VMDKStreamMarkers.footer(fromTrailer: badMarker)) == nil)
        let markerError = #expect(throws: KDCTError.self) { try VMDKStreamMarkers.footer(fromTrailer: badMarker) }
        #expect(markerError?.code == .corrupt && markerError?.message.contains("damaged streamOptimized footer") == true)

        var badMagic = trailer
        badMagic[512] = UInt8(ascii: "X")
        let magicError = #expect(throws: KDCTError.self) { try VMDKStreamMarkers.footer(fromTrailer: badMagic) }
        #expect(magicError?.code == .corrupt)

        var noEOS = trailer
        noEOS[1024] = 0x55
        let eosError = #expect(throws: KDCTError.self) { try VMDKStreamMarkers.footer(fromTrailer: noEOS) }
        #expect(eosError?.code == .truncated)

        var atEnd = trailer
        for i in 0..<8 { atEnd[512 + 56 + i] = 0xFF }
        let loopError = #expect(throws: KDCTError.self) { try VMDKStreamMarkers.footer(fromTrailer: atEnd) }
        #expect(loopError?.code == .corrupt && loopError?.field == "footer gdOffset")
    }

    @Test func cowdHeaderDecodesAndValidates() throws {
        let bytes = VMDKBytes.cowd(capacitySectors: 8192, grains: [:])
        let header = try VMDKCOWDHeader.decode(bytes)
        #expect(header.version == 1 && header.capacity == 8192 && header.grainSize == 1 && header.grainDirectoryOffset == 4)
        #expect(header.grainDirectoryEntries == 2 && !header.inconsistent)
        let layout = try header.layout(fileSize: UInt64(bytes.count), limits: ImageLimits())
        #expect(layout.entriesPerTable == 4096 && layout.grainBytes == 512 && layout.directoryEntries == 2)

        var badVersion = VMDKCOWDHeader(version: 2, flags: 3, capacity: 8192, grainSize: 1, grainDirectoryOffset: 4,
                                        grainDirectoryEntries: 2, freeSector: 0)
        #expect(throws: KDCTError.self) { try badVersion.layout(fileSize: 1 << 20, limits: ImageLimits()) }
        badVersion.version = 1
        badVersion.grainDirectoryEntries = 1  // does not cover the capacity
        let error = #expect(throws: KDCTError.self) { try badVersion.layout(fileSize: 1 << 20, limits: ImageLimits()) }
        #expect(error?.field == "numGDEntries")
        badVersion.grainDirectoryEntries = 2
        badVersion.grainSize = 6
        #expect(throws: KDCTError.self) { try badVersion.layout(fileSize: 1 << 20, limits: ImageLimits()) }
    }

    /// A valid seSparse constant header (the corpus file's layout).
    static func seSparseHeader() -> ByteWriter {
        var w = ByteWriter(count: 512)
        let values: [UInt64] = [0xCAFE_BABE, 0x2_0000_0001, 0x10_0000, 8, 64, 0, 0, 0, 0, 0, 1, 1, 2, 2, 0x800, 0x800,
                                0x1000, 0x800, 0x1800, 0x800, 0x2000, 0x800, 0x2800, 0x800, 0x3000, 0x10_0000]
        for (i, v) in values.enumerated() { w.u64le(v, at: i * 8) }
        return w
    }

    @Test func seSparseHeaderChecksAreStrict() throws {
        let valid = Self.seSparseHeader()
        let header = try VMDKSESparseHeader.decode(valid.bytes)
        #expect(header.capacity == 0x10_0000 && header.grainDirectoryOffset == 0x1000 && header.grainsOffset == 0x3000)
        for (offset, value, field) in [(8, UInt64(3), "version"), (24, 16, "grain size"), (32, 32, "grain table size"),
                                       (40, 1, "flags"), (56, 1, "reserved2")] {
            var w = valid
            w.u64le(value, at: offset)
            let error = #expect(throws: KDCTError.self) { try VMDKSESparseHeader.decode(w.bytes) }
            #expect(error?.code == .unsupported && error?.field == field, "\(field): \(String(describing: error))")
        }
        var padded = valid
        padded.u8(1, at: 300)
        #expect(throws: KDCTError.self) { try VMDKSESparseHeader.decode(padded.bytes) }

        var volatile = ByteWriter(count: 512)
        volatile.u64le(0xCAFE_CAFE, at: 0)
        try VMDKSESparseHeader.checkVolatileHeader(volatile.bytes)
        volatile.u64le(1, at: 24)
        let dirty = #expect(throws: KDCTError.self) { try VMDKSESparseHeader.checkVolatileHeader(volatile.bytes) }
        #expect(dirty?.code == .unsupported && dirty?.field == "replayJournal")
    }

    @Test func seSparseEntriesDecodeLikeQemu() throws {
        let encoding = VMDKGrainEncoding.seSparse(grainTablesOffset: 0x1800 * 512, grainTablesBytes: 0x800 * 512,
                                                  grainsOffset: 0x3000 * 512)
        func grain(_ raw: UInt64) throws -> VMDKGrain {
            try encoding.grain(raw, grainBytes: 4096, needed: 4096, fileSize: 1 << 40, file: "t") { "entry" }
        }
        #expect(try grain(0) == .unallocated)
        #expect(try grain(0x1000_0000_0000_0000) == .zero)  // unmapped
        #expect(try grain(0x2000_0000_0000_0000) == .zero)
        #expect(try grain(0x3000_0000_0000_0005) == .data(0x3000 * 512 + (5 << 12) * 4096))
        #expect(try grain(0x3001_0000_0000_0000) == .data(0x3000 * 512 + 1 * 4096))
        #expect(throws: KDCTError.self) { try grain(0x0000_0000_0000_0005) }
        #expect(throws: KDCTError.self) { try grain(0x4000_0000_0000_0000) }
        #expect(try encoding.tableOffset(0x1000_0000_0000_0002, index: 0, tableBytes: 32768, fileSize: 1 << 40, file: "t")
                == 0x1800 * 512 + 2 * 32768)
        #expect(throws: KDCTError.self) {
            try encoding.tableOffset(0x2000_0000_0000_0002, index: 0, tableBytes: 32768, fileSize: 1 << 40, file: "t")
        }
        #expect(throws: KDCTError.self) {  // outside the grain table area
            try encoding.tableOffset(0x1000_0000_0000_9999, index: 0, tableBytes: 32768, fileSize: 1 << 40, file: "t")
        }
    }

    @Test func extentNamesOfSplitDisks() {
        #expect(VMDKImage.splitStem(of: "image_t1-s001.vmdk") == "image_t1")
        #expect(VMDKImage.splitStem(of: "disk-f012.vmdk") == "disk")
        #expect(VMDKImage.splitStem(of: "disk-flat.vmdk") == "disk")
        #expect(VMDKImage.splitStem(of: "vm-000001-delta.vmdk") == "vm-000001")
        #expect(VMDKImage.splitStem(of: "disk.vmdk") == nil)
        #expect(VMDKImage.splitStem(of: "my-disk.vmdk") == nil)
    }
}
