/// The VHDX region table ([MS-VHDX] 2.2.3): 64 KiB at file offset 192 KiB (a copy at 256 KiB), locating the BAT
/// and the metadata region.
struct VHDXRegionTable: Sendable, Equatable {
    /// Bytes covered by the checksum.
    static let size = 64 << 10
    /// File offsets of the two copies.
    static let offsets: [UInt64] = [192 << 10, 256 << 10]
    /// Most entries a table may hold.
    static let maxEntries = 2047

    /// One region.
    struct Entry: Sendable, Equatable {
        /// Region identifier.
        var guid: VHDXGUID
        /// File offset (a multiple of 1 MiB, at least 1 MiB).
        var fileOffset: UInt64
        /// Length in bytes (a multiple of 1 MiB).
        var length: UInt32
        /// The implementation must understand it to open the file.
        var required: Bool

        /// The file range it occupies.
        var range: Range<UInt64> { fileOffset..<(fileOffset + UInt64(length)) }
    }

    /// All entries, in stored order.
    var entries: [Entry]
    /// The BAT region.
    var bat: Entry
    /// The metadata region.
    var metadata: Entry

    /// Decodes and validates a 64 KiB table: signature `regi`, CRC-32C, at most 2047 entries, each offset and
    /// length a multiple of 1 MiB past the header section, no two regions (nor a region and the log `logRange`)
    /// overlapping, the BAT and metadata regions present exactly once, and no unknown region marked required.
    static func decode(_ bytes: [UInt8], logRange: Range<UInt64>?, file: String? = nil) throws -> VHDXRegionTable {
        guard bytes.count == size else {
            throw KDCTError(.truncated, "region table is \(bytes.count) bytes, expected \(size)", file: file, field: "region table")
        }
        let r = ByteReader(bytes, structure: "VHDX region table")
        guard try r.slice(0, 4) == Array("regi".utf8) else {
            throw KDCTError.corrupt("region table has no \"regi\" signature", file: file, field: "region table signature")
        }
        let stored = try r.u32le(4)
        let computed = VHDXChecksum.crc32c(bytes, checksumOffset: 4)
        guard stored == computed else {
            throw KDCTError(.checksum, "region table checksum is 0x\(String(stored, radix: 16)), computed 0x\(String(computed, radix: 16))",
                            file: file, field: "region table checksum")
        }
        let count = try r.u32le(8)
        guard count <= UInt32(maxEntries) else {
            throw KDCTError.corrupt("region table has \(count) entries, more than the \(maxEntries) allowed",
                                    file: file, field: "region table entry count")
        }
        let mib: UInt64 = 1 << 20
        var entries: [Entry] = []
        var bat: Entry?
        var metadata: Entry?
        for index in 0..<Int(count) {
            let base = 16 + index * 32
            let entry = Entry(guid: try VHDXGUID.read(r, base), fileOffset: try r.u64le(base + 16),
                              length: try r.u32le(base + 24), required: try r.u32le(base + 28) & 1 != 0)
            let name = entry.guid == VHDXGUID.batRegion ? "BAT region"
                : entry.guid == VHDXGUID.metadataRegion ? "metadata region" : "region \(entry.guid)"
            guard entry.fileOffset % mib == 0, entry.fileOffset >= mib, UInt64(entry.length) % mib == 0, entry.length > 0,
                  entry.fileOffset <= UInt64.max - UInt64(entry.length) else {
                throw KDCTError.corrupt("\(name) at file offset \(entry.fileOffset), length \(entry.length): offset and length must be non-zero multiples of 1 MiB past the 1 MiB header section",
                                        file: file, field: "region table entry \(index)")
            }
            if let clash = entries.first(where: { $0.range.overlaps(entry.range) }) {
                throw KDCTError.corrupt("\(name) (\(entry.fileOffset)..\(entry.range.upperBound)) overlaps region \(clash.guid) (\(clash.fileOffset)..\(clash.range.upperBound))",
                                        file: file, field: "region table entry \(index)")
            }
            if let logRange, !logRange.isEmpty, logRange.overlaps(entry.range) {
                throw KDCTError.corrupt("\(name) (\(entry.fileOffset)..\(entry.range.upperBound)) overlaps the log (\(logRange.lowerBound)..\(logRange.upperBound))",
                                        file: file, field: "region table entry \(index)")
            }
            if entry.guid == VHDXGUID.batRegion {
                guard bat == nil else { throw KDCTError.corrupt("two BAT regions", file: file, field: "region table entry \(index)") }
                bat = entry
            } else if entry.guid == VHDXGUID.metadataRegion {
                guard metadata == nil else { throw KDCTError.corrupt("two metadata regions", file: file, field: "region table entry \(index)") }
                metadata = entry
            } else if entry.required {
                throw KDCTError.unsupported("required region \(entry.guid) is not one this reader knows",
                                            file: file, field: "region table entry \(index)")
            }
            entries.append(entry)
        }
        guard let bat, let metadata else {
            throw KDCTError.corrupt("region table lacks the \(bat == nil ? "BAT" : "metadata") region", file: file, field: "region table")
        }
        return VHDXRegionTable(entries: entries, bat: bat, metadata: metadata)
    }
}
