/// The metadata table at the start of the metadata region ([MS-VHDX] 2.6.1): 64 KiB holding a 32-byte header
/// and up to 2047 32-byte entries that locate the metadata items within the region.
struct VHDXMetadataTable: Sendable, Equatable {
    /// Size of the table.
    static let size = 64 << 10
    /// Most entries.
    static let maxEntries = 2047
    /// Largest metadata item.
    static let maxItemLength: UInt32 = 1 << 20

    /// One metadata item location.
    struct Entry: Sendable, Equatable {
        /// Item identifier.
        var itemID: VHDXGUID
        /// Offset from the start of the metadata region (0 for an empty item, else at least 64 KiB).
        var offset: UInt32
        /// Length in bytes (at most 1 MiB).
        var length: UInt32
        /// `IsUser`.
        var isUser: Bool
        /// `IsVirtualDisk`.
        var isVirtualDisk: Bool
        /// `IsRequired`.
        var isRequired: Bool
    }

    /// Entries in stored order.
    var entries: [Entry]

    /// The system (not user) item with `id`, if present.
    func item(_ id: VHDXGUID) -> Entry? { entries.first { $0.itemID == id && !$0.isUser } }

    /// Decodes and validates the table of a region of `regionLength` bytes: signature `metadata`, at most 2047
    /// entries, each item within the region past the table, at most 1 MiB, no two items overlapping, no
    /// duplicate (id, IsUser) pair, and no unknown required system item.
    static func decode(_ bytes: [UInt8], regionLength: UInt32, file: String? = nil) throws -> VHDXMetadataTable {
        let r = ByteReader(bytes, structure: "VHDX metadata table")
        guard bytes.count >= 32, try r.slice(0, 8) == Array("metadata".utf8) else {
            throw KDCTError.corrupt("metadata table has no \"metadata\" signature", file: file, field: "metadata table signature")
        }
        let count = Int(try r.u16le(10))
        guard count <= maxEntries else {
            throw KDCTError.corrupt("metadata table has \(count) entries, more than the \(maxEntries) allowed",
                                    file: file, field: "metadata table entry count")
        }
        let known: Set<VHDXGUID> = [.fileParameters, .virtualDiskSize, .virtualDiskID, .logicalSectorSize,
                                    .physicalSectorSize, .parentLocator]
        var entries: [Entry] = []
        for index in 0..<count {
            let base = 32 + index * 32
            let flags = try r.u32le(base + 24)
            let entry = Entry(itemID: try VHDXGUID.read(r, base), offset: try r.u32le(base + 16),
                              length: try r.u32le(base + 20), isUser: flags & 1 != 0,
                              isVirtualDisk: flags & 2 != 0, isRequired: flags & 4 != 0)
            let field = "metadata entry \(index) (\(entry.itemID))"
            if entry.length == 0 {
                guard entry.offset == 0 else {
                    throw KDCTError.corrupt("empty item with offset \(entry.offset) (must be 0)", file: file, field: field)
                }
            } else {
                let end = UInt64(entry.offset) + UInt64(entry.length)
                guard entry.offset >= UInt32(size), entry.length <= maxItemLength, end <= UInt64(regionLength) else {
                    throw KDCTError.corrupt("item at offset \(entry.offset), length \(entry.length) must lie past the 64 KiB table, be at most 1 MiB and end within the \(regionLength)-byte region",
                                            file: file, field: field)
                }
                if let clash = entries.first(where: {
                    $0.length > 0 && UInt64($0.offset) < end && UInt64(entry.offset) < UInt64($0.offset) + UInt64($0.length)
                }) {
                    throw KDCTError.corrupt("item overlaps item \(clash.itemID)", file: file, field: field)
                }
            }
            if entries.contains(where: { $0.itemID == entry.itemID && $0.isUser == entry.isUser }) {
                throw KDCTError.corrupt("item appears twice", file: file, field: field)
            }
            if entry.isRequired, !entry.isUser, !known.contains(entry.itemID) {
                throw KDCTError.unsupported("required metadata item \(entry.itemID) is not one this reader knows",
                                            file: file, field: field)
            }
            entries.append(entry)
        }
        return VHDXMetadataTable(entries: entries)
    }
}

/// The system metadata items a reader needs ([MS-VHDX] 2.6.2), decoded and validated.
struct VHDXDiskParameters: Sendable, Equatable {
    /// Payload block size: a power of two from 1 MiB to 256 MiB.
    var blockSize: UInt32
    /// `LeaveBlockAllocated` (a fixed disk).
    var leaveBlocksAllocated: Bool
    /// `HasParent` (a differencing disk).
    var hasParent: Bool
    /// Guest size in bytes (a multiple of the logical sector size, at most 64 TiB).
    var virtualDiskSize: UInt64
    /// The disk's identity (SCSI page 83).
    var virtualDiskID: VHDXGUID
    /// Logical sector size: 512 or 4096.
    var logicalSectorSize: UInt32
    /// Physical sector size: 512 or 4096.
    var physicalSectorSize: UInt32

    /// Largest virtual disk ([MS-VHDX] 2.6.2.2).
    static let maxVirtualDiskSize: UInt64 = 64 << 40

    /// Decodes the items from their bytes (each at least as long as its fields) and validates them.
    static func decode(fileParameters: [UInt8], virtualDiskSize: [UInt8], virtualDiskID: [UInt8],
                              logicalSectorSize: [UInt8], physicalSectorSize: [UInt8],
                              file: String? = nil) throws -> VHDXDiskParameters {
        let parameters = ByteReader(fileParameters, structure: "VHDX file parameters")
        let blockSize = try parameters.u32le(0)
        let flags = try parameters.u32le(4)
        let size = try ByteReader(virtualDiskSize, structure: "VHDX virtual disk size").u64le(0)
        let identity = try VHDXGUID.read(ByteReader(virtualDiskID, structure: "VHDX virtual disk id"), 0)
        let logical = try ByteReader(logicalSectorSize, structure: "VHDX logical sector size").u32le(0)
        let physical = try ByteReader(physicalSectorSize, structure: "VHDX physical sector size").u32le(0)
        guard blockSize >= 1 << 20, blockSize <= 256 << 20, blockSize.nonzeroBitCount == 1 else {
            throw KDCTError.corrupt("block size \(blockSize) is not a power of two from 1 MiB to 256 MiB",
                                    file: file, field: "file parameters block size")
        }
        guard logical == 512 || logical == 4096 else {
            throw KDCTError.corrupt("logical sector size \(logical) is neither 512 nor 4096", file: file, field: "logical sector size")
        }
        guard physical == 512 || physical == 4096 else {
            throw KDCTError.corrupt("physical sector size \(physical) is neither 512 nor 4096", file: file, field: "physical sector size")
        }
        guard size % UInt64(logical) == 0, size <= maxVirtualDiskSize else {
            throw KDCTError.corrupt("virtual disk size \(size) is not a multiple of the logical sector size \(logical) up to 64 TiB",
                                    file: file, field: "virtual disk size")
        }
        return VHDXDiskParameters(blockSize: blockSize, leaveBlocksAllocated: flags & 1 != 0, hasParent: flags & 2 != 0,
                                  virtualDiskSize: size, virtualDiskID: identity, logicalSectorSize: logical,
                                  physicalSectorSize: physical)
    }
}

/// The parent locator metadata item ([MS-VHDX] 2.6.2.6): a locator type and UTF-16LE key/value pairs.
struct VHDXParentLocator: Sendable, Equatable {
    /// The locator type (must be the VHDX type).
    var locatorType: VHDXGUID
    /// Key/value pairs in stored order.
    var entries: [(key: String, value: String)]

    /// Same type and same key/value pairs in the same order.
    static func == (a: VHDXParentLocator, b: VHDXParentLocator) -> Bool {
        a.locatorType == b.locatorType && a.entries.count == b.entries.count
            && zip(a.entries, b.entries).allSatisfy { $0.key == $1.key && $0.value == $1.value }
    }

    /// The value of `key`, if present.
    func value(_ key: String) -> String? { entries.first { $0.key == key }?.value }

    /// Decodes an item: header (type, count), 12-byte entries, each key and value inside the item.
    static func decode(_ bytes: [UInt8], file: String? = nil) throws -> VHDXParentLocator {
        let r = ByteReader(bytes, structure: "VHDX parent locator")
        let type = try VHDXGUID.read(r, 0)
        let count = Int(try r.u16le(18))
        guard 20 + count * 12 <= bytes.count else {
            throw KDCTError.corrupt("parent locator declares \(count) entries, more than its \(bytes.count) bytes hold",
                                    file: file, field: "parent locator key-value count")
        }
        var entries: [(key: String, value: String)] = []
        for index in 0..<count {
            let base = 20 + index * 12
            let keyOffset = Int(try r.u32le(base)), valueOffset = Int(try r.u32le(base + 4))
            let keyLength = Int(try r.u16le(base + 8)), valueLength = Int(try r.u16le(base + 10))
            guard keyOffset > 0, valueOffset > 0, keyLength > 0, valueLength > 0,
                  keyOffset + keyLength <= bytes.count, valueOffset + valueLength <= bytes.count else {
                throw KDCTError.corrupt("parent locator entry \(index) (key at \(keyOffset)+\(keyLength), value at \(valueOffset)+\(valueLength)) lies outside the \(bytes.count)-byte item",
                                        file: file, field: "parent locator entry \(index)")
            }
            let key = try r.utf16le(keyOffset, keyLength - keyLength % 2)
            let value = try r.utf16le(valueOffset, valueLength - valueLength % 2)
            guard !entries.contains(where: { $0.key == key }) else {
                throw KDCTError.corrupt("parent locator key \"\(key)\" appears twice", file: file, field: "parent locator entry \(index)")
            }
            entries.append((key, value))
        }
        return VHDXParentLocator(locatorType: type, entries: entries)
    }
}
