import CKDCTShims

/// CRC-32C as VHDX uses it ([MS-VHDX] 2.2.2: Castagnoli, computed with the checksum field taken as zero).
enum VHDXChecksum {
    /// The CRC-32C of `bytes` with the 4 bytes at `checksumOffset` taken as zero.
    static func crc32c(_ bytes: [UInt8], checksumOffset: Int) -> UInt32 {
        bytes.withUnsafeBytes { raw -> UInt32 in
            guard let base = raw.baseAddress, checksumOffset >= 0, checksumOffset + 4 <= raw.count else {
                return kdct_crc32c(0, raw.baseAddress, raw.count)
            }
            var crc = kdct_crc32c(0, base, checksumOffset)
            var zero: UInt32 = 0
            crc = kdct_crc32c(crc, &zero, 4)
            return kdct_crc32c(crc, base + checksumOffset + 4, raw.count - checksumOffset - 4)
        }
    }
}

/// The file type identifier at offset 0 ([MS-VHDX] 2.2.1): the `vhdxfile` signature and the creator string.
struct VHDXFileIdentifier: Sendable, Equatable {
    /// Bytes read to decode it (signature + 512-byte UTF-16LE creator).
    static let size = 520
    /// The creator (e.g. `Microsoft Windows 10.0.15063.0`, `QEMU v1.6.50`), empty when absent.
    var creator: String

    /// Decodes the identifier; `invalidFormat` without the signature.
    static func decode(_ bytes: [UInt8]) throws -> VHDXFileIdentifier {
        guard bytes.count >= 8, Array(bytes[0..<8]) == Array("vhdxfile".utf8) else {
            throw KDCTError.invalidFormat("no \"vhdxfile\" signature", field: "file identifier")
        }
        let reader = ByteReader(bytes, structure: "VHDX file identifier")
        let creator = (try? reader.utf16le(8, min(512, bytes.count - 8))) ?? ""
        return VHDXFileIdentifier(creator: creator)
    }
}

/// One of the two VHDX headers ([MS-VHDX] 2.2.2), 4 KiB at file offsets 64 KiB and 128 KiB.
struct VHDXHeader: Sendable, Equatable {
    /// Bytes covered by the checksum.
    static let size = 4096
    /// File offsets of the two copies.
    static let offsets: [UInt64] = [64 << 10, 128 << 10]

    /// `Signature` is "head".
    var signatureIsValid: Bool
    /// `Checksum` as stored.
    var checksum: UInt32
    /// CRC-32C computed over the 4 KiB.
    var computedChecksum: UInt32
    /// `SequenceNumber`: the valid header with the larger one is current.
    var sequenceNumber: UInt64
    /// `FileWriteGuid`.
    var fileWriteGUID: VHDXGUID
    /// `DataWriteGuid`: what a child's parent linkage names.
    var dataWriteGUID: VHDXGUID
    /// `LogGuid`: zero when there is no log to replay.
    var logGUID: VHDXGUID
    /// `LogVersion` (must be 0).
    var logVersion: UInt16
    /// `Version` (must be 1).
    var version: UInt16
    /// `LogLength` in bytes (a multiple of 1 MiB).
    var logLength: UInt32
    /// `LogOffset` in the file (a multiple of 1 MiB).
    var logOffset: UInt64

    /// True when the checksum matches.
    var checksumIsValid: Bool { checksum == computedChecksum }

    /// A header that may be used: signature, checksum and version 1 ([MS-VHDX] 2.2.2).
    var isValid: Bool { signatureIsValid && checksumIsValid && version == 1 }

    /// Decodes 4096 bytes; validity is computed, not enforced (see `isValid`).
    static func decode(_ bytes: [UInt8]) throws -> VHDXHeader {
        guard bytes.count == size else {
            throw KDCTError(.truncated, "a VHDX header is \(size) bytes, got \(bytes.count)", field: "header")
        }
        let r = ByteReader(bytes, structure: "VHDX header")
        return VHDXHeader(signatureIsValid: try r.slice(0, 4) == Array("head".utf8),
                          checksum: try r.u32le(4),
                          computedChecksum: VHDXChecksum.crc32c(bytes, checksumOffset: 4),
                          sequenceNumber: try r.u64le(8),
                          fileWriteGUID: try VHDXGUID.read(r, 16),
                          dataWriteGUID: try VHDXGUID.read(r, 32),
                          logGUID: try VHDXGUID.read(r, 48),
                          logVersion: try r.u16le(64),
                          version: try r.u16le(66),
                          logLength: try r.u32le(68),
                          logOffset: try r.u64le(72))
    }

    /// Chooses the current header of two decoded copies: the valid one, or of two valid ones the one with the
    /// larger sequence number. Two valid copies with equal sequence numbers must be identical (Disk2vhd writes
    /// such pairs); otherwise the file is corrupt. Neither valid: `checksum` when a copy has the right signature
    /// but a bad checksum, else `corrupt`. Returns the index (0 or 1).
    static func selectCurrent(_ headers: [VHDXHeader], file: String? = nil) throws -> Int {
        guard headers.count == 2 else { throw KDCTError.corrupt("two headers expected", file: file, field: "header") }
        let (first, second) = (headers[0], headers[1])
        switch (first.isValid, second.isValid) {
        case (true, false): return 0
        case (false, true): return 1
        case (true, true):
            if first.sequenceNumber != second.sequenceNumber { return first.sequenceNumber > second.sequenceNumber ? 0 : 1 }
            guard first == second else {
                throw KDCTError.corrupt("both headers are valid with sequence number \(first.sequenceNumber) but differ",
                                        file: file, field: "header sequence number")
            }
            return 0
        case (false, false):
            let describe = { (h: VHDXHeader, n: Int) -> String in
                if !h.signatureIsValid { return "header \(n) has no \"head\" signature" }
                if !h.checksumIsValid {
                    return "header \(n) has checksum 0x\(String(h.checksum, radix: 16)), computed 0x\(String(h.computedChecksum, radix: 16))"
                }
                return "header \(n) has version \(h.version), not 1"
            }
            let kind: KDCTError.Code = headers.contains { $0.signatureIsValid && !$0.checksumIsValid } ? .checksum : .corrupt
            throw KDCTError(kind, "no valid header: \(describe(first, 1)); \(describe(second, 2))",
                            file: file, field: "header")
        }
    }

    /// Checks the log fields of the current header ([MS-VHDX] 2.2.2): log length and offset multiples of 1 MiB,
    /// the log after the 1 MiB header section, log version 0 when there is a log to replay.
    func validateLogFields(file: String? = nil) throws {
        let mib: UInt64 = 1 << 20
        guard UInt64(logLength) % mib == 0 else {
            throw KDCTError.corrupt("log length \(logLength) is not a multiple of 1 MiB", file: file, field: "header log length")
        }
        guard logLength == 0 || (logOffset % mib == 0 && logOffset >= mib) else {
            throw KDCTError.corrupt("log offset \(logOffset) is not a multiple of 1 MiB at or after 1 MiB",
                                    file: file, field: "header log offset")
        }
        guard logOffset <= UInt64.max - UInt64(logLength) else {
            throw KDCTError.corrupt("log offset \(logOffset) + length \(logLength) overflows", file: file, field: "header log offset")
        }
        if !logGUID.isZero && logVersion != 0 {
            throw KDCTError.unsupported("log version \(logVersion) (only 0 is defined)", file: file, field: "header log version")
        }
    }
}
