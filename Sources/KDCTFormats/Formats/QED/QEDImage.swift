/// A QED image (QEMU Enhanced Disk): L1/L2 tables of `table_size` clusters, zero clusters, an optional backing
/// file (raw when the "backing format no probe" feature says so).
///
/// Read-only use never repairs: an image with the need-check flag set (not closed cleanly) is opened and read
/// as it is, as qemu does for read-only opens, and `info` reports it as dirty. Every offset taken from the
/// tables is checked (cluster-aligned, after the header, inside the file) before it is used.
final class QEDImage: MappedDevice {
    /// The image file.
    let file: ReadOnlyFile
    /// The decoded header.
    let header: QEDHeader
    let virtualSize: UInt64
    let info: ImageInfo
    let hostFileNames: HostFileNames
    private let tables: TwoLevelTable
    private let clusterBits: UInt64
    private let clusterSize: UInt64

    /// Reads and validates the header and L1 table of `file`. `backingReference` describes the backing file for
    /// `info` (the caller opens it).
    convenience init(file: ReadOnlyFile, limits: ImageLimits, backingReference: ImageReference? = nil) throws {
        try self.init(file: file, header: try QEDImage.readHeader(file, limits: limits), limits: limits,
                      backingReference: backingReference)
    }

    /// Reads and validates the L1 table of `file`, whose validated header is `header`.
    init(file: ReadOnlyFile, header: QEDHeader, limits: ImageLimits, backingReference: ImageReference?) throws {
        self.file = file
        self.header = header
        clusterSize = UInt64(header.clusterSize)
        clusterBits = UInt64(header.clusterSize.trailingZeroBitCount)
        virtualSize = header.imageSize
        let l1Bytes = try file.readBytes(count: Int(header.tableBytes), at: header.l1TableOffset, what: "QED L1 table")
        let l1Table = TableDecoding.uint64LittleEndian(l1Bytes)
        for (index, l2Offset) in l1Table.enumerated() where l2Offset != 0 {
            try QEDImage.checkTableOffset(l2Offset, header: header, fileSize: file.size, what: "L1 entry \(index)", path: file.path)
        }
        let layout = TwoLevelTable.Layout(unitBytes: clusterSize, entriesPerTable: UInt64(header.tableEntries), entryBytes: 8,
                                          byteOrder: .littleEndian, tableName: "QED L2 table", directoryName: "L1 table")
        tables = TwoLevelTable(file: file, layout: layout, tableOffsets: l1Table, cacheBytes: limits.maxTableCacheBytes)
        info = QEDImage.makeInfo(file: file, header: header, backingReference: backingReference)
        hostFileNames = HostFileNames(file)
    }

    static func readHeader(_ file: ReadOnlyFile, limits: ImageLimits) throws -> QEDHeader {
        let bytes = try file.readBytes(count: Int(min(UInt64(QEDHeader.size), file.size)), at: 0, what: "QED header")
        let header = try QEDHeader.decode(bytes)
        try header.validate(fileSize: file.size, limits: limits)
        return header
    }

    /// An L2 table offset must be cluster-aligned, after the header, with the whole table inside the file.
    static func checkTableOffset(_ offset: UInt64, header: QEDHeader, fileSize: UInt64, what: String, path: String) throws {
        if offset % UInt64(header.clusterSize) != 0 || offset < header.headerBytes {
            throw KDCTError.corrupt("\(what) points to an L2 table at offset \(offset), not a cluster-aligned offset after the header",
                                    file: path, field: what)
        }
        if offset > fileSize || header.tableBytes > fileSize - offset {
            throw KDCTError.corrupt("\(what) points to an L2 table at offset \(offset), past the end of the file (\(fileSize) bytes)",
                                    file: path, field: what)
        }
    }

    /// The backing file name, or nil when the image has none.
    static func backingName(_ file: ReadOnlyFile, header: QEDHeader) throws -> String? {
        guard header.hasBackingFile, header.backingFilenameSize > 0 else { return nil }
        let bytes = try file.readBytes(count: Int(header.backingFilenameSize), at: UInt64(header.backingFilenameOffset),
                                       what: "backing file name")
        let name = String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
        return name.isEmpty ? nil : name
    }

    /// Registry entry point: the image alone, or a chain over its backing file (opened under the reference
    /// policy, as raw when the header says so, probed otherwise).
    @Sendable static func open(_ file: ReadOnlyFile, _ context: OpenContext) throws -> any BlockDevice {
        let header = try readHeader(file, limits: context.limits)
        guard let name = try backingName(file, header: header) else {
            return try QEDImage(file: file, header: header, limits: context.limits, backingReference: nil)
        }
        guard let path = try context.resolveReference(name, kind: .backingFile, from: file.path) else {
            return try QEDImage(file: file, header: header, limits: context.limits,
                                backingReference: ImageReference(kind: .backingFile, name: name))
        }
        let top = try QEDImage(file: file, header: header, limits: context.limits,
                               backingReference: ImageReference(kind: .backingFile, name: name, resolvedPath: path, opened: true))
        let base = try context.openResolved(path, kind: .backingFile, from: file.path,
                                            format: header.backingIsRaw ? .raw : nil)
        return try ChainedBlockDevice(top: top, opened: base, reference: name)
    }

    // MARK: Mapping

    func mapping(at offset: UInt64, upTo end: UInt64) throws -> MappedRun {
        try tables.mapping(at: offset, upTo: end) { entry, unit in try mapping(entry, unit) }
    }

    /// The run an allocated L2 entry maps, its data checked (cluster-aligned, after the header, inside the file).
    private func mapping(_ entry: TwoLevelTable.Entry, _ unit: TwoLevelTable.Unit) throws -> MappedRun {
        let (cluster, length) = (unit.index, unit.length)
        switch QEDClusterEntry(raw: entry.raw) {
        case .unallocated:
            return .absent(length)
        case .zero:
            return .zero(length)
        case let .data(host):
            let what = "L2 entry \(entry.index) of L2 table \(entry.table) (cluster \(cluster), guest offset \(cluster << clusterBits))"
            // The low bits of an offset are reserved and must be zero; cluster alignment covers them.
            if host % clusterSize != 0 || host < header.headerBytes {
                throw KDCTError.corrupt("\(what) is \(host), not a cluster-aligned offset after the header",
                                        file: file.path, field: "L2 entry")
            }
            if host > file.size || clusterSize > file.size - host {
                throw KDCTError.corrupt("\(what) points to offset \(host), past the end of the file (\(file.size) bytes)",
                                        file: file.path, field: "L2 entry")
            }
            return .data(length, file, host + unit.within)
        }
    }

    // MARK: Info

    static func makeInfo(file: ReadOnlyFile, header: QEDHeader, backingReference: ImageReference?) -> ImageInfo {
        let fields: [(String, InfoValue)] = [
            ("cluster-size", .unsigned(UInt64(header.clusterSize))),
            ("table-size", .unsigned(UInt64(header.tableSize))),
            ("header-size", .unsigned(UInt64(header.headerSize))),
            ("features", .unsigned(header.features)),
            ("compat-features", .unsigned(header.compatFeatures)),
            ("autoclear-features", .unsigned(header.autoclearFeatures)),
            ("l1-table-offset", .unsigned(header.l1TableOffset)),
            ("need-check", .bool(header.needsCheck)),
            ("backing-is-raw", .bool(header.backingIsRaw)),
        ]
        var notes: [String] = []
        if header.needsCheck {
            notes.append("need-check flag set: the image was not closed cleanly; read as it is, never repaired")
        }
        if header.compatFeatures != 0 {
            notes.append("unknown compatible feature bits 0x\(String(header.compatFeatures, radix: 16)) ignored")
        }
        if header.autoclearFeatures != 0 {
            notes.append("unknown autoclear feature bits 0x\(String(header.autoclearFeatures, radix: 16)) ignored (a read-only reader does not clear them)")
        }
        if header.backingIsRaw && !header.hasBackingFile {
            notes.append("the backing-is-raw feature is set without a backing file")
        }
        return ImageInfo(format: .qed, filename: file.path, virtualSize: header.imageSize,
                         clusterSize: UInt64(header.clusterSize), dirty: header.needsCheck,
                         backingFilename: backingReference?.name,
                         backingFormat: header.hasBackingFile && header.backingIsRaw ? "raw" : nil,
                         references: backingReference.map { [$0] } ?? [],
                         formatSpecific: .object(fields), notes: notes, actualSize: file.allocatedSize)
    }
}
