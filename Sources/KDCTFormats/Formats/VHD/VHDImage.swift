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
public final class VHDImage: BlockDevice {
    /// The image file.
    public let file: ReadOnlyFile
    /// The footer in use (the copy at offset 0 for dynamic disks, unless it is damaged).
    public let footer: VHDFooter
    /// The dynamic disk header (nil for fixed disks).
    public let header: VHDDynamicHeader?
    /// Guest size (see `VHDSizeRule`).
    public let virtualSize: UInt64
    /// What the image says about itself, built at open.
    public let info: ImageInfo

    /// Where the size came from.
    let sizeSource: VHDSizeMode
    /// BAT entries (dynamic/differencing), one per block.
    let bat: [UInt32]
    /// log2 of the block size.
    let blockShift: UInt64
    /// Block size in bytes.
    let blockSize: UInt64
    /// Bytes of the bitmap stored before each block's data.
    let bitmapSize: UInt64
    /// Sectors (bits) per block.
    let sectorsPerBlock: Int
    /// Per-block sector presence.
    let presenceCache: BoundedCache<UInt64, BlockPresence>

    /// VHD timestamps count seconds from 2000-01-01 00:00:00 UTC.
    static let timestampEpoch: Int = 946_684_800

    private init(file: ReadOnlyFile, footer: VHDFooter, header: VHDDynamicHeader?, virtualSize: UInt64,
                 sizeSource: VHDSizeMode, bat: [UInt32], info: ImageInfo, cacheBytes: UInt64) {
        self.file = file
        self.footer = footer
        self.header = header
        self.virtualSize = virtualSize
        self.sizeSource = sizeSource
        self.bat = bat
        self.info = info
        let blockSize = UInt64(header?.blockSize ?? 512)
        self.blockSize = blockSize
        self.blockShift = UInt64(blockSize.trailingZeroBitCount)
        self.bitmapSize = VHDDynamicHeader.bitmapSize(blockSize: UInt32(truncatingIfNeeded: blockSize))
        self.sectorsPerBlock = Int(blockSize / 512)
        self.presenceCache = .presenceCache(bytes: cacheBytes, bitmapBytes: Int(blockSize / 512 + 7) / 8)
    }

    var isFixed: Bool { header == nil }

    // MARK: Opening

    /// Registry entry point: opens a VHD, and for a differencing disk its parent (under the reference policy),
    /// returning the chain.
    @Sendable static func open(_ file: ReadOnlyFile, _ context: OpenContext) throws -> any BlockDevice {
        let limits = context.limits
        let located = try locateFooter(file)
        let footer = located.footer
        var notes = located.notes
        guard let diskType = footer.diskType else {
            throw KDCTError.unsupported("disk type \(footer.rawDiskType) (only fixed 2, dynamic 3, differencing 4 exist)",
                                        file: file.path, field: "footer disk type")
        }
        let (virtualSize, sizeSource) = VHDSizeRule.virtualSize(of: footer, mode: context.options.vhdSizeMode)
        try ImageLimits.check("virtual size", virtualSize, max: limits.maxVirtualSize, file: file.path)
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

        if diskType == .fixed {
            guard virtualSize <= located.offset else {
                throw KDCTError(.truncated,
                                "fixed disk of \(virtualSize) bytes but the data before the footer is only \(located.offset) bytes",
                                file: file.path, field: "footer current size")
            }
            let info = makeInfo(file: file, footer: footer, header: nil, virtualSize: virtualSize,
                                sizeSource: sizeSource, notes: notes, references: [], backingName: nil)
            return VHDImage(file: file, footer: footer, header: nil, virtualSize: virtualSize, sizeSource: sizeSource,
                            bat: [], info: info, cacheBytes: 0)
        }

        // Dynamic disk header at the footer's data offset.
        let headerOffset = footer.dataOffset
        guard headerOffset >= 512, headerOffset < file.size else {
            throw KDCTError.corrupt("the footer places the dynamic disk header at file offset \(headerOffset), outside the file (\(file.size) bytes)",
                                    file: file.path, field: "footer data offset")
        }
        var headerBytes = [UInt8](repeating: 0, count: VHDDynamicHeader.size)
        let got = try headerBytes.withUnsafeMutableBytes { try file.readAvailable(into: $0, at: headerOffset) }
        headerBytes.removeLast(headerBytes.count - got)
        let geometry = try VHDDynamicHeader.decodeGeometry(headerBytes)
        let blockSize = UInt64(geometry.blockSize)
        // Table geometry first: an impossible table is reported as such even when the rest is damaged.
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

        // BAT: only the entries that cover the guest are needed.
        let batData = try file.readBytes(count: Int(blocksNeeded * 4), at: header.tableOffset, what: "BAT")
        let reserved: [Range<UInt64>] = [0..<512, headerOffset..<(headerOffset + UInt64(VHDDynamicHeader.size)),
                                         header.tableOffset..<max(batEnd, header.tableOffset + 1)]
        let bat = try VHDBlockAllocationTable.decode(batData, blockSize: blockSize,
                                                     bitmapSize: VHDDynamicHeader.bitmapSize(blockSize: header.blockSize),
                                                     reserved: reserved, fileSize: file.size, file: file.path)

        guard diskType == .differencing else {
            let info = makeInfo(file: file, footer: footer, header: header, virtualSize: virtualSize,
                                sizeSource: sizeSource, notes: notes, references: [], backingName: nil)
            return VHDImage(file: file, footer: footer, header: header, virtualSize: virtualSize, sizeSource: sizeSource,
                            bat: bat.entries, info: info, cacheBytes: limits.maxTableCacheBytes)
        }

        // Differencing: the parent, named by the locators and the parent name.
        let (names, locatorNotes, locatorNames) = try parentNames(of: header, file: file, limits: limits)
        notes += locatorNotes
        let candidates = ParentCandidate.list(names)
        let parentName = header.parentName.isEmpty ? (names.first?.stored ?? "") : header.parentName
        var references: [ImageReference] = []
        for name in names where !references.contains(where: { $0.name == name.stored }) {
            references.append(ImageReference(kind: .parent, name: name.stored))
        }
        guard context.options.openReferences else {
            let info = makeInfo(file: file, footer: footer, header: header, virtualSize: virtualSize,
                                sizeSource: sizeSource, notes: notes, references: references, backingName: parentName,
                                locatorNames: locatorNames)
            return VHDImage(file: file, footer: footer, header: header, virtualSize: virtualSize, sizeSource: sizeSource,
                            bat: bat.entries, info: info, cacheBytes: limits.maxTableCacheBytes)
        }
        let expectedID = header.parentUniqueID
        let found = try ParentFinder.open(candidates, parentName: parentName, imagePath: file.path, context: context,
                                          format: .vhd) { device in
            guard expectedID.contains(where: { $0 != 0 }) else { return nil }
            guard let parent = vhdLayer(of: device) else { return nil }
            if parent.footer.uniqueID != expectedID {
                return "its unique id is \(hex(parent.footer.uniqueID)), the child expects \(hex(expectedID))"
            }
            return nil
        }
        if let parent = vhdLayer(of: found.device), header.parentTimestamp != 0, parent.footer.timestamp != 0,
           parent.footer.timestamp != header.parentTimestamp {
            notes.append("the parent's time stamp (\(formatTimestamp(parent.footer.timestamp))) differs from the one recorded in the child (\(formatTimestamp(header.parentTimestamp)))")
        }
        if found.device.virtualSize != virtualSize {
            notes.append("the parent's virtual size (\(found.device.virtualSize)) differs from the child's (\(virtualSize))")
        }
        for index in references.indices where references[index].name == found.candidate.stored {
            references[index].resolvedPath = found.resolvedPath
            references[index].opened = true
        }
        let info = makeInfo(file: file, footer: footer, header: header, virtualSize: virtualSize, sizeSource: sizeSource,
                            notes: notes, references: references, backingName: parentName, locatorNames: locatorNames)
        let child = VHDImage(file: file, footer: footer, header: header, virtualSize: virtualSize, sizeSource: sizeSource,
                             bat: bat.entries, info: info, cacheBytes: limits.maxTableCacheBytes)
        return ChainedBlockDevice(top: child, base: found.device)
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

    /// Sector presence of allocated block `block` (its bitmap, read once and cached).
    @inline(__always)
    func presence(ofBlock block: Int, entry: UInt32) throws -> BlockPresence {
        try presenceCache.value(for: UInt64(block)) {
            let count = (sectorsPerBlock + 7) / 8
            let bitmap = try file.readBytes(count: count, at: UInt64(entry) * 512, what: "bitmap of block \(block)")
            return SectorBitmap.presence(of: bitmap, bits: sectorsPerBlock, order: .mostSignificantFirst)
        }
    }

    /// Status, file offset (for data) and end of the run starting at `offset` within its block.
    @inline(__always)
    func blockRun(at offset: UInt64, end: UInt64) throws -> BlockRun {
        let block = Int(offset >> blockShift)
        let blockStart = UInt64(block) << blockShift
        let blockEnd = min(end, blockStart + blockSize)
        let entry = bat[block]
        if entry == VHDBlockAllocationTable.unallocated { return BlockRun(status: .absent, end: blockEnd) }
        let inBlock = offset - blockStart
        let dataStart = UInt64(entry) * 512 + bitmapSize
        switch try presence(ofBlock: block, entry: entry) {
        case .all: return BlockRun(status: .data, host: dataStart + inBlock, end: blockEnd)
        case .none: return BlockRun(status: .absent, end: blockEnd)
        case let .some(bitmap):
            let sector = Int(inBlock / 512)
            let run = SectorBitmap.run(in: bitmap, from: sector, to: sectorsPerBlock, order: .mostSignificantFirst)
            let runEnd = min(blockEnd, blockStart + UInt64(sector + run.count) * 512)
            return run.set ? BlockRun(status: .data, host: dataStart + inBlock, end: runEnd)
                : BlockRun(status: .absent, end: runEnd)
        }
    }

    /// The run at `offset` from the block table (and sector bitmaps), never reading guest data.
    public func extent(at offset: UInt64, maxLength: UInt64) throws -> Extent {
        guard offset < virtualSize, maxLength > 0 else {
            throw KDCTError(.invalidArgument, "extent at guest offset \(offset) (length \(maxLength)) outside the virtual size \(virtualSize)",
                            file: info.filename)
        }
        let end = maxLength >= virtualSize - offset ? virtualSize : offset + maxLength
        if isFixed {
            // Guest byte N is file byte N (the footer lies past the virtual size): holes in a sparse file are
            // zero extents, exactly as for a raw file.
            return try RawImage(file: file).extent(at: offset, maxLength: end - offset)
        }
        return try BlockRuns.extent(at: offset, to: end) { try blockRun(at: $0, end: end) }
    }

    /// Guest bytes at `offset`: stored runs read straight into `buffer`, the rest zeros.
    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        try checkRange(offset, buffer.count)
        if isFixed {
            try file.read(into: buffer, at: offset, what: "fixed disk data")
            return
        }
        try BlockRuns.read(into: buffer, at: offset, run: { try blockRun(at: $0, end: $1) }) { slice, host, guest in
            try file.read(into: slice, at: host, what: "data of block \(guest >> blockShift)")
        }
    }
}
