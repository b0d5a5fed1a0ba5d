/// streamOptimized markers and footer ("Virtual Disk Format 1.1", section "Stream-Optimized Compressed Sparse
/// Extents").
///
/// A stream is: header, then for each grain a grain marker `{lba u64, size u32, zlib data}` padded to a sector, with
/// metadata markers `{numSectors u64, size u32 = 0, type u32}` before each grain table, the grain directory and the
/// footer, and an end-of-stream marker last. A writer that streams does not know the grain directory offset when it
/// writes the header, so it stores `gdOffset = 0xFFFFFFFFFFFFFFFF` there and repeats the header, with the real
/// offset, as the footer: the last three sectors are footer marker, footer, end-of-stream marker.
enum VMDKStreamMarkers {
    /// Metadata marker types.
    enum MarkerType: UInt32, Sendable {
        /// The last sector of a stream.
        case endOfStream = 0
        /// Precedes a grain table.
        case grainTable = 1
        /// Precedes the grain directory.
        case grainDirectory = 2
        /// Precedes the footer (a copy of the header with the real grain directory offset).
        case footer = 3
    }

    /// Size of the `{lba, size}` prefix of a grain marker; the compressed bytes follow it.
    static let grainMarkerHeaderSize = 12

    /// A decoded grain marker prefix.
    struct GrainMarker: Sendable, Equatable {
        /// Extent-relative sector of the grain's first byte.
        var lba: UInt64
        /// Compressed byte count following the prefix.
        var size: UInt32
    }

    /// Decodes the 12-byte prefix of a grain marker.
    static func grainMarker(_ bytes: UnsafeRawBufferPointer) -> GrainMarker? {
        guard bytes.count >= grainMarkerHeaderSize else { return nil }
        var lba: UInt64 = 0
        for i in (0..<8).reversed() { lba = lba << 8 | UInt64(bytes[i]) }
        var size: UInt32 = 0
        for i in (8..<12).reversed() { size = size << 8 | UInt32(bytes[i]) }
        return GrainMarker(lba: lba, size: size)
    }

    /// Bytes read from the end of a stream to find its footer: footer marker, footer, end-of-stream marker.
    static let trailerSize = 3 * VMDKSparseHeader.size

    /// Decodes the footer from the last 1536 bytes of a stream (footer marker, footer header, end-of-stream marker),
    /// checking both markers as qemu does. A damaged trailer is `corrupt`; a trailer whose last sector is not an
    /// end-of-stream marker at all is reported as `truncated` (a stream cut short has grain data there).
    static func footer(fromTrailer bytes: [UInt8], file: String? = nil) throws -> VMDKSparseHeader {
        guard bytes.count == trailerSize else {
            throw KDCTError(.truncated, "the file is too short to hold a streamOptimized footer", file: file, field: "footer")
        }
        let reader = ByteReader(bytes, structure: "streamOptimized trailer")
        let eosValue = try reader.u64le(1024)
        let eosSize = try reader.u32le(1024 + 8)
        let eosType = try reader.u32le(1024 + 12)
        let eosPaddingIsZero = bytes[(1024 + 16)...].allSatisfy { $0 == 0 }
        guard eosValue == 0, eosSize == 0, eosType == MarkerType.endOfStream.rawValue, eosPaddingIsZero else {
            throw KDCTError(.truncated,
                            "the grain directory is in the footer, but the file does not end with an end-of-stream marker: the stream was cut short",
                            file: file, field: "end-of-stream marker")
        }
        let footerSize = try reader.u32le(8)
        let footerType = try reader.u32le(12)
        guard footerSize == 0, footerType == MarkerType.footer.rawValue else {
            throw KDCTError(.corrupt,
                            "damaged streamOptimized footer: the footer marker has size \(footerSize) and type \(footerType) (expected 0 and 3)",
                            file: file, field: "footer marker")
        }
        let footer: VMDKSparseHeader
        do {
            footer = try VMDKSparseHeader.decode(Array(bytes[512..<1024]), structure: "streamOptimized footer")
        } catch let error as KDCTError {
            throw KDCTError(.corrupt, "damaged streamOptimized footer: \(error.message)", file: file, field: "footer")
        }
        guard !footer.grainDirectoryInFooter else {
            throw KDCTError(.corrupt, "damaged streamOptimized footer: its grain directory offset also says \"at the end\"",
                            file: file, field: "footer gdOffset")
        }
        return footer
    }
}
