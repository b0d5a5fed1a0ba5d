#if canImport(Glibc)
import Glibc
#endif

/// A VHD (Virtual PC / Virtual Server / Hyper-V, qemu's `vpc`): fixed, dynamic or differencing.
///
/// - Fixed: the guest is the file up to the footer; file holes are reported as zero extents.
/// - Dynamic and differencing: the block allocation table maps each block to its bitmap + data in the file. The
///   block bitmap is honoured: a sector whose bit is clear is `.absent` (zeros in a dynamic disk, the parent's
///   data in a differencing one). Bitmaps are read once per block into a bounded cache.
/// - A differencing disk is opened with its parent as a `ChainedBlockDevice` (see `open`).
final class VHDImage: MappedDevice {
    /// The image file.
    let file: ReadOnlyFile
    /// The footer in use (the copy at offset 0 for dynamic disks, unless it is damaged).
    let footer: VHDFooter
    /// The dynamic disk header (nil for fixed disks).
    let header: VHDDynamicHeader?
    /// Guest size (see `VHDSizeRule`).
    let virtualSize: UInt64
    /// What the image says about itself, built at open.
    let info: ImageInfo
    let hostFileNames: HostFileNames

    /// BAT entries (dynamic/differencing), one per block.
    let bat: [UInt32]
    /// The block lookup (dynamic/differencing).
    private let blocks: BlockTable
    /// Bytes of the bitmap stored before each block's data.
    private let bitmapSize: UInt64
    /// Per-block sector presence.
    private let presenceCache: BoundedCache<UInt64, BlockPresence>

    /// VHD timestamps count seconds from 2000-01-01 00:00:00 UTC.
    static let timestampEpoch: Int = 946_684_800

    private init(file: ReadOnlyFile, footer: VHDFooter, header: VHDDynamicHeader?, virtualSize: UInt64, bat: [UInt32],
                 info: ImageInfo, cacheBytes: UInt64) {
        self.file = file
        self.footer = footer
        self.header = header
        self.virtualSize = virtualSize
        self.bat = bat
        self.info = info
        hostFileNames = HostFileNames(file)
        let blockSize = UInt64(header?.blockSize ?? 512)
        blocks = BlockTable(file: file, blockShift: UInt64(blockSize.trailingZeroBitCount), sectorBytes: 512,
                            bitOrder: .mostSignificantFirst)
        bitmapSize = VHDDynamicHeader.bitmapSize(blockSize: UInt32(truncatingIfNeeded: blockSize))
        presenceCache = .presenceCache(bytes: cacheBytes, bitmapBytes: Int(blockSize / 512 + 7) / 8)
    }

    var isFixed: Bool { header == nil }

    // MARK: Opening

    /// What the footer says about the disk, gathered while opening.
    private struct Described {
        var file: ReadOnlyFile
        var footer: VHDFooter
        /// Where the footer starts (for a fixed disk, also where guest data ends).
        var footerOffset: UInt64
        var virtualSize: UInt64
        var sizeSource: VHDSizeMode
        var notes: [String]
        var cacheBytes: UInt64

        func image(header: VHDDynamicHeader?, bat: [UInt32], references: [ImageReference] = [], backingName: String? = nil,
                   locatorNames: [Int: String] = [:]) -> VHDImage {
            let info = makeInfo(file: file, footer: footer, header: header, virtualSize: virtualSize,
                                sizeSource: sizeSource, notes: notes, references: references, backingName: backingName,
                                locatorNames: locatorNames)
            return VHDImage(file: file, footer: footer, header: header, virtualSize: virtualSize, bat: bat, info: info,
                            cacheBytes: cacheBytes)
        }
    }

    /// Registry entry point: opens a VHD, and for a differencing disk its parent (under the reference policy),
    /// returning the chain.
    @Sendable static func open(_ file: ReadOnlyFile, _ context: OpenContext) throws -> any BlockDevice {
        let described = try describe(file, context: context)
        guard described.footer.diskType != .fixed else {
            guard described.virtualSize <= described.footerOffset else {
                throw KDCTError(.truncated,
                                "fixed disk of \(described.virtualSize) bytes but the data before the footer is only \(described.footerOffset) bytes",
                                file: file.path, field: "footer current size")
            }
            return described.image(header: nil, bat: [])
        }
        let (header, bat) = try readDynamicHeader(described, limits: context.limits)
        guard described.footer.diskType == .differencing else { return described.image(header: header, bat: bat) }
        return try openDifferencing(described, header: header, bat: bat, context: context)
    }

    /// Locates the footer and decides the virtual size, with notes on how.
    private static func describe(_ file: ReadOnlyFile, context: OpenContext) throws -> Described {
        let located = try locateFooter(file)
        let footer = located.footer
        var notes = located.notes
        guard footer.diskType != nil else {
            throw KDCTError.unsupported("disk type \(footer.rawDiskType) (only fixed 2, dynamic 3, differencing 4 exist)",
                                        file: file.path, field: "footer disk type")
        }
        let (virtualSize, sizeSource) = VHDSizeRule.virtualSize(of: footer, mode: context.options.vhdSizeMode)
        try ImageLimits.check("virtual size", virtualSize, max: context.limits.maxVirtualSize, file: file.path)
        let chsSize = footer.geometrySize
        if chsSize != footer.currentSize {
            if sizeSource == .chs {
                notes.append("virtual size from the CHS geometry (\(chsSize) bytes); the footer's current size is \(footer.currentSize) bytes")
            } else if footer.hasMaximumGeometry {
                notes.append("virtual size from the footer's current size; the geometry is the maximum one (about 127 GiB), which says nothing about the size")
            } else {
                notes.append("virtual size from the footer's current size; the CHS geometry gives \(chsSize) bytes")
            }
        }
        return Described(file: file, footer: footer, footerOffset: located.offset, virtualSize: virtualSize,
                         sizeSource: sizeSource, notes: notes, cacheBytes: context.limits.maxTableCacheBytes)
    }

    /// Reads the dynamic disk header at the footer's data offset and the BAT it names, checking the table geometry
    /// first (an impossible table is reported as such even when the rest is damaged), then the checksum, then every
    /// BAT entry against the file.
    private static func readDynamicHeader(_ described: Described, limits: ImageLimits) throws -> (VHDDynamicHeader, [UInt32]) {
        let file = described.file
        let virtualSize = described.virtualSize
        let headerOffset = described.footer.dataOffset
        guard headerOffset >= 512, headerOffset < file.size else {
            throw KDCTError.corrupt("the footer places the dynamic disk header at file offset \(headerOffset), outside the file (\(file.size) bytes)",
                                    file: file.path, field: "footer data offset")
        }
        var headerBytes = [UInt8](repeating: 0, count: VHDDynamicHeader.size)
        let got = try headerBytes.withUnsafeMutableBytes { try file.readAvailable(into: $0, at: headerOffset) }
        headerBytes.removeLast(headerBytes.count - got)
        let geometry = try VHDDynamicHeader.decodeGeometry(headerBytes)
        let blockSize = UInt64(geometry.blockSize)
        guard blockSize >= 512, blockSize.nonzeroBitCount == 1 else {
            throw KDCTError.corrupt("block size \(blockSize) is not a power of two of at least 512",
                                    file: file.path, field: "dynamic header block size")
        }
        try ImageLimits.check("dynamic header block size", blockSize, max: limits.maxClusterSize, file: file.path)
        let batBytes = UInt64(geometry.maxTableEntries) * 4
        try ImageLimits.check("BAT size (max table entries \(geometry.maxTableEntries) x 4)", batBytes,
                              max: limits.maxTableBytes, file: file.path)
        let blocksNeeded = (virtualSize + blockSize - 1) / blockSize
        guard UInt64(geometry.maxTableEntries) >= blocksNeeded else {
            throw KDCTError.corrupt("max table entries \(geometry.maxTableEntries) cover \(UInt64(geometry.maxTableEntries) * blockSize) bytes, less than the virtual size \(virtualSize)",
                                    file: file.path, field: "dynamic header max table entries")
        }
        let (batEnd, batOverflow) = geometry.tableOffset.addingReportingOverflow(batBytes)
        guard geometry.tableOffset >= 512, !batOverflow, batEnd <= file.size else {
            throw KDCTError(.truncated, "the BAT at file offset \(geometry.tableOffset) (\(batBytes) bytes) lies past the end of the file (\(file.size) bytes)",
                            file: file.path, field: "dynamic header table offset")
        }
        let header = try VHDDynamicHeader.decode(headerBytes)
        guard header.checksumIsValid else {
            throw KDCTError(.checksum, "dynamic disk header checksum is 0x\(String(header.checksum, radix: 16)), computed 0x\(String(header.computedChecksum ?? 0, radix: 16))",
                            file: file.path, field: "dynamic header checksum")
        }
        // Only the entries that cover the guest are needed.
        let batData = try file.readBytes(count: Int(blocksNeeded * 4), at: header.tableOffset, what: "BAT")
        let reserved: [Range<UInt64>] = [0..<512, headerOffset..<(headerOffset + UInt64(VHDDynamicHeader.size)),
                                         header.tableOffset..<max(batEnd, header.tableOffset + 1)]
        let bat = try VHDBlockAllocationTable.decode(batData, blockSize: blockSize,
                                                     bitmapSize: VHDDynamicHeader.bitmapSize(blockSize: header.blockSize),
                                                     reserved: reserved, fileSize: file.size, file: file.path)
        return (header, bat.entries)
    }

    /// A differencing disk: the child over its parent, found from the locators and the parent name (under the
    /// reference policy) and checked against the unique id the child records.
    private static func openDifferencing(_ described: Described, header: VHDDynamicHeader, bat: [UInt32],
                                         context: OpenContext) throws -> any BlockDevice {
        var described = described
        let file = described.file
        let (names, locatorNotes, locatorNames) = try parentNames(of: header, file: file, limits: context.limits)
        described.notes += locatorNotes
        let parentName = header.parentName.isEmpty ? (names.first?.stored ?? "") : header.parentName
        var references: [ImageReference] = []
        for name in names where !references.contains(where: { $0.name == name.stored }) {
            references.append(ImageReference(kind: .parent, name: name.stored))
        }
        guard context.options.openReferences else {
            return described.image(header: header, bat: bat, references: references, backingName: parentName,
                                   locatorNames: locatorNames)
        }
        let expectedID = header.parentUniqueID
        let found = try ParentFinder.open(ParentCandidate.list(names), parentName: parentName, imagePath: file.path,
                                          context: context, format: .vhd) { device in
            guard expectedID.contains(where: { $0 != 0 }), let parent = vhdLayer(of: device) else { return nil }
            if parent.footer.uniqueID != expectedID {
                return "its unique id is \(hex(parent.footer.uniqueID)), the child expects \(hex(expectedID))"
            }
            return nil
        }
        if let parent = vhdLayer(of: found.device), header.parentTimestamp != 0, parent.footer.timestamp != 0,
           parent.footer.timestamp != header.parentTimestamp {
            described.notes.append("the parent's time stamp (\(formatTimestamp(parent.footer.timestamp))) differs from the one recorded in the child (\(formatTimestamp(header.parentTimestamp)))")
        }
        if found.device.virtualSize != described.virtualSize {
            described.notes.append("the parent's virtual size (\(found.device.virtualSize)) differs from the child's (\(described.virtualSize))")
        }
        for index in references.indices where references[index].name == found.candidate.stored {
            references[index].resolvedPath = found.resolvedPath
            references[index].opened = true
        }
        let child = described.image(header: header, bat: bat, references: references, backingName: parentName,
                                    locatorNames: locatorNames)
        return try ChainedBlockDevice(top: child, opened: found.device, reference: found.candidate.path ?? found.resolvedPath)
    }

    /// The VHD layer on top of `device` (itself, or the top of a chain), if it is one.
    static func vhdLayer(of device: any BlockDevice) -> VHDImage? {
        if let image = device as? VHDImage { return image }
        if let chain = device as? ChainedBlockDevice { return chain.top as? VHDImage }
        return nil
    }

    /// Finds the footer: at offset 0 for dynamic and differencing disks (falling back to the copy at the end
    /// when the first is damaged), else in the last 512 bytes (511 for old Virtual PC files) for fixed disks.
    /// `offset` is where the footer starts, which for a fixed disk is also where guest data ends.
    static func locateFooter(_ file: ReadOnlyFile) throws -> (footer: VHDFooter, offset: UInt64, notes: [String]) {
        guard file.size >= 511 else {
            throw KDCTError.invalidFormat("file of \(file.size) bytes is too small for a VHD footer", file: file.path)
        }
        func checksumError(_ footer: VHDFooter, at offset: UInt64) -> KDCTError {
            KDCTError(.checksum, "footer at file offset \(offset) has checksum 0x\(String(footer.checksum, radix: 16)), computed 0x\(String(footer.computedChecksum, radix: 16))",
                      file: file.path, field: "footer checksum")
        }
        var tail: VHDFooter?
        if file.size >= 512 {
            let bytes = try file.readBytes(count: 512, at: file.size - 512, what: "VHD footer")
            tail = VHDFooter.hasCookie(bytes) ? try VHDFooter.decode(bytes) : nil
        }
        if file.size >= 512 {
            let bytes = try file.readBytes(count: 512, at: 0, what: "VHD footer copy")
            if VHDFooter.hasCookie(bytes) {
                let head = try VHDFooter.decode(bytes)
                if head.diskType != .fixed {
                    if head.checksumIsValid { return (head, 0, []) }
                    if let tail, tail.checksumIsValid, tail.diskType == head.diskType {
                        return (tail, 0, ["the footer copy at offset 0 has a bad checksum; the footer at the end of the file was used"])
                    }
                    throw checksumError(head, at: 0)
                }
                // A fixed disk whose guest data happens to start with a footer: the real one is at the end.
            }
        }
        if let tail {
            guard tail.diskType == .fixed else {
                throw KDCTError.corrupt("the footer at the end of the file describes a \(tail.diskType?.name ?? "type \(tail.rawDiskType)") disk, but there is no footer copy at offset 0",
                                        file: file.path, field: "footer disk type")
            }
            guard tail.checksumIsValid else { throw checksumError(tail, at: file.size - 512) }
            return (tail, file.size - 512, [])
        }
        let old = try file.readBytes(count: 511, at: file.size - 511, what: "VHD footer")
        guard VHDFooter.hasCookie(old) else {
            throw KDCTError.invalidFormat("no \"conectix\" footer at the start or end of the file", file: file.path, field: "VHD footer")
        }
        let footer = try VHDFooter.decode(old)
        guard footer.checksumIsValid else { throw checksumError(footer, at: file.size - 511) }
        guard footer.diskType == .fixed else {
            throw KDCTError.corrupt("a 511-byte footer describes a \(footer.diskType?.name ?? "type \(footer.rawDiskType)") disk; only old fixed disks have one",
                                    file: file.path, field: "footer disk type")
        }
        return (footer, file.size - 511, ["old 511-byte footer (early Virtual PC)"])
    }

    /// The parent names of a differencing disk: the locator entries in priority order, then the header's parent
    /// name; plus notes about locators that could not be read.
    static func parentNames(of header: VHDDynamicHeader, file: ReadOnlyFile, limits: ImageLimits) throws
        -> (names: [(source: String, stored: String, isPOSIX: Bool)], notes: [String], byIndex: [Int: String]) {
        var names: [(source: String, stored: String, isPOSIX: Bool)] = []
        var notes: [String] = []
        var byIndex: [Int: String] = [:]
        let ordered = header.parentLocators.enumerated().sorted {
            (VHDParentLocator.priority(of: $0.element.platformCode), $0.offset)
                < (VHDParentLocator.priority(of: $1.element.platformCode), $1.offset)
        }
        for (index, entry) in ordered {
            let label = "\(entry.platformText) locator"
            guard entry.dataLength > 0 else { continue }
            let maxLength = min(UInt64(VHDParentLocator.maxDataLength), limits.maxDescriptorBytes)
            guard UInt64(entry.dataLength) <= maxLength else {
                notes.append("\(label) ignored: its data length \(entry.dataLength) is above \(maxLength)")
                continue
            }
            let (end, overflow) = entry.dataOffset.addingReportingOverflow(UInt64(entry.dataLength))
            guard !overflow, end <= file.size else {
                notes.append("\(label) ignored: its data at file offset \(entry.dataOffset) lies past the end of the file")
                continue
            }
            let data = try file.readBytes(count: Int(entry.dataLength), at: entry.dataOffset, what: label)
            guard let decoded = VHDParentLocator.decodeName(code: entry.platformCode, data: data) else {
                notes.append("\(label) ignored: no usable name in it")
                continue
            }
            names.append((label, decoded.name, decoded.isPOSIX))
            byIndex[index] = decoded.name
        }
        if !header.parentName.isEmpty {
            names.append(("parent name", header.parentName, false))
        }
        return (names, notes, byIndex)
    }

    // MARK: Info

    static func hex(_ bytes: [UInt8]) -> String {
        bytes.map { String($0, radix: 16).leftPadded(to: 2) }.joined()
    }

    static func uuidText(_ bytes: [UInt8]) -> String {
        (try? ByteReader(bytes, structure: "UUID").uuidBigEndian(0)) ?? hex(bytes)
    }

    /// `2013-05-01T12:00:00Z` for a VHD time stamp.
    static func formatTimestamp(_ value: UInt32) -> String {
        var seconds = time_t(timestampEpoch + Int(value))
        var parts = tm()
        guard gmtime_r(&seconds, &parts) != nil else { return String(value) }
        func two(_ v: Int32) -> String { String(v).leftPadded(to: 2) }
        return "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday))T\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec))Z"
    }

    /// A human name for the creator application code.
    static func creatorName(_ app: [UInt8]) -> String? {
        switch String(decoding: app, as: UTF8.self) {
        case "vpc ": return "Virtual PC"
        case "vs  ": return "Virtual Server"
        case "win ": return "Hyper-V / Windows"
        case "d2v\0", "d2v ": return "Disk2vhd"
        case "qemu", "qem2": return "QEMU"
        case "tap\0": return "XenServer"
        case "CTXS": return "Citrix XenConverter"
        case "vbox": return "VirtualBox"
        case "wa\0\0": return "Windows Azure"
        default: return nil
        }
    }

    static func makeInfo(file: ReadOnlyFile, footer: VHDFooter, header: VHDDynamicHeader?, virtualSize: UInt64,
                         sizeSource: VHDSizeMode, notes: [String], references: [ImageReference],
                         backingName: String?, locatorNames: [Int: String] = [:]) -> ImageInfo {
        let version = "\(footer.creatorVersionMajor).\(footer.creatorVersionMinor)"
        let code = "creator \"\(footer.creatorApplicationText)\" \(version), host \"\(footer.creatorHostOSText)\""
        let producer = creatorName(footer.creatorApplication).map { "\($0) (\(code))" } ?? code
        var fields: [(String, InfoValue)] = [
            ("creator-app", .string(footer.creatorApplicationText)),
            ("creator-version", .string(version)),
            ("creator-host-os", .string(footer.creatorHostOSText)),
            ("disk-type", .string(footer.diskType?.name ?? String(footer.rawDiskType))),
            ("current-size", .unsigned(footer.currentSize)),
            ("chs-size", .unsigned(footer.geometrySize)),
            ("size-source", .string(sizeSource == .chs ? "chs" : "current")),
            ("original-size", .unsigned(footer.originalSize)),
            ("geometry", .object([("cylinders", .unsigned(UInt64(footer.cylinders))),
                                  ("heads", .unsigned(UInt64(footer.heads))),
                                  ("sectors-per-track", .unsigned(UInt64(footer.sectorsPerTrack)))])),
            ("unique-id", .string(uuidText(footer.uniqueID))),
            ("timestamp", .string(formatTimestamp(footer.timestamp))),
            ("saved-state", .bool(footer.savedState != 0)),
        ]
        if let header {
            fields.append(("block-size", .unsigned(UInt64(header.blockSize))))
            fields.append(("max-table-entries", .unsigned(UInt64(header.maxTableEntries))))
            if footer.diskType == .differencing {
                fields.append(("parent-unique-id", .string(uuidText(header.parentUniqueID))))
                fields.append(("parent-timestamp", .string(formatTimestamp(header.parentTimestamp))))
                fields.append(("parent-name", .string(header.parentName)))
                fields.append(("parent-locators", .array(header.parentLocators.enumerated().map { index, entry in
                    var locator: [(String, InfoValue)] = [("platform", .string(entry.platformText)),
                                                          ("data-offset", .unsigned(entry.dataOffset)),
                                                          ("data-length", .unsigned(UInt64(entry.dataLength)))]
                    if let name = locatorNames[index] { locator.append(("name", .string(name))) }
                    return .object(locator)
                })))
            }
        }
        return ImageInfo(format: .vhd, filename: file.path, virtualSize: virtualSize,
                         subformat: footer.diskType?.name, clusterSize: header.map { UInt64($0.blockSize) },
                         backingFilename: backingName, backingFormat: backingName == nil ? nil : "vhd",
                         references: references, producer: producer, formatSpecific: .object(fields), notes: notes,
                         actualSize: file.allocatedSize)
    }

    // MARK: Mapping

    func mapping(at offset: UInt64, upTo end: UInt64) throws -> MappedRun {
        // Fixed: guest byte N is file byte N (the footer lies past the virtual size); holes in a sparse file are
        // zero runs, exactly as for a raw file.
        if isFixed { return try FlatFile.mapping(file, start: 0, at: offset, upTo: end) }
        return try blocks.mapping(at: offset, upTo: end) { block in
            let entry = bat[Int(block)]
            if entry == VHDBlockAllocationTable.unallocated { return .absent }
            // The block's sector bitmap comes first, then its data.
            let bitmapOffset = UInt64(entry) * 512
            let presence = try presenceCache.value(for: block) {
                let sectors = Int(blocks.blockBytes / 512)
                let bitmap = try file.readBytes(count: (sectors + 7) / 8, at: bitmapOffset, what: "bitmap of block \(block)")
                return SectorBitmap.presence(of: bitmap, bits: sectors, order: .mostSignificantFirst)
            }
            return .partial(bitmapOffset + bitmapSize, presence)
        }
    }
}
