/// A QCOW version 1 image (qemu's original copy-on-write format): two-level L1/L2 tables, uncompressed and
/// raw-deflate compressed clusters, an optional backing file. Encrypted images are refused.
///
/// The header and L1 table are read and validated at open; L2 entries come through the shared `TwoLevelTable` and
/// are checked when used (alignment, inside the file).
final class QCOWImage: MappedDevice {
    /// The image file.
    let file: ReadOnlyFile
    /// The decoded header.
    let header: QCOWHeader
    let virtualSize: UInt64
    let info: ImageInfo
    let hostFileNames: HostFileNames
    private let tables: TwoLevelTable
    private let clusterBits: UInt64
    private let clusterSize: UInt64

    /// Reads and validates the header and L1 table of `file`. `backingReference` describes the backing file
    /// for `info` (the caller opens it).
    convenience init(file: ReadOnlyFile, limits: ImageLimits, backingReference: ImageReference? = nil) throws {
        try self.init(file: file, header: try QCOWImage.readHeader(file, limits: limits), limits: limits,
                      backingReference: backingReference)
    }

    /// Reads and validates the L1 table of `file`, whose validated header is `header`.
    init(file: ReadOnlyFile, header: QCOWHeader, limits: ImageLimits, backingReference: ImageReference?) throws {
        self.file = file
        self.header = header
        clusterBits = UInt64(header.clusterBits)
        clusterSize = header.clusterSize
        virtualSize = header.virtualSize
        let l2Bytes = UInt64(header.l2Entries) * 8
        let l1Bytes = try file.readBytes(count: Int(header.l1Entries) * 8, at: header.l1TableOffset, what: "QCOW L1 table")
        let l1Table = TableDecoding.uint64BigEndian(l1Bytes)
        for (index, l2Offset) in l1Table.enumerated() where l2Offset != 0 {
            if l2Offset % header.clusterSize != 0 {
                throw KDCTError.corrupt("L1 entry \(index) points to an L2 table at offset \(l2Offset), not aligned to the cluster size \(header.clusterSize)",
                                        file: file.path, field: "L1 entry \(index)")
            }
            if l2Offset > file.size || l2Bytes > file.size - l2Offset {
                throw KDCTError.corrupt("L1 entry \(index) points to an L2 table at offset \(l2Offset), past the end of the file (\(file.size) bytes)",
                                        file: file.path, field: "L1 entry \(index)")
            }
        }
        let layout = TwoLevelTable.Layout(unitBytes: clusterSize, entriesPerTable: UInt64(header.l2Entries), entryBytes: 8,
                                          byteOrder: .bigEndian, tableName: "QCOW L2 table", directoryName: "L1 table")
        tables = TwoLevelTable(file: file, layout: layout, tableOffsets: l1Table, cacheBytes: limits.maxTableCacheBytes)
        info = QCOWImage.makeInfo(file: file, header: header, l1Entries: l1Table.count, backingReference: backingReference)
        hostFileNames = HostFileNames(file)
    }

    static func readHeader(_ file: ReadOnlyFile, limits: ImageLimits) throws -> QCOWHeader {
        let bytes = try file.readBytes(count: Int(min(UInt64(QCOWHeader.size), file.size)), at: 0, what: "QCOW header")
        let header = try QCOWHeader.decode(bytes)
        try header.validate(fileSize: file.size, limits: limits)
        return header
    }

    /// The backing file name stored in the image, or nil when it has none.
    static func backingName(_ file: ReadOnlyFile, header: QCOWHeader) throws -> String? {
        guard header.backingFileOffset != 0, header.backingFileSize > 0 else { return nil }
        let bytes = try file.readBytes(count: Int(header.backingFileSize), at: header.backingFileOffset,
                                       what: "backing file name")
        let name = String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
        return name.isEmpty ? nil : name
    }

    /// Registry entry point: the image alone, or a chain over its backing file (opened under the reference
    /// policy; its format is probed, as QCOW v1 does not record it).
    @Sendable static func open(_ file: ReadOnlyFile, _ context: OpenContext) throws -> any BlockDevice {
        let header = try readHeader(file, limits: context.limits)
        guard let name = try backingName(file, header: header) else {
            return try QCOWImage(file: file, header: header, limits: context.limits, backingReference: nil)
        }
        guard let path = try context.resolveReference(name, kind: .backingFile, from: file.path) else {
            return try QCOWImage(file: file, header: header, limits: context.limits,
                                 backingReference: ImageReference(kind: .backingFile, name: name))
        }
        let top = try QCOWImage(file: file, header: header, limits: context.limits,
                                backingReference: ImageReference(kind: .backingFile, name: name, resolvedPath: path, opened: true))
        let base = try context.openResolved(path, kind: .backingFile, from: file.path)
        return try ChainedBlockDevice(top: top, opened: base, reference: name)
    }

    // MARK: Mapping

    func mapping(at offset: UInt64, upTo end: UInt64) throws -> MappedRun {
        try tables.mapping(at: offset, upTo: end) { entry, unit in try mapping(entry, unit) }
    }

    /// The run an allocated L2 entry maps, its data checked to lie inside the file.
    private func mapping(_ entry: TwoLevelTable.Entry, _ unit: TwoLevelTable.Unit) throws -> MappedRun {
        let (cluster, within, length) = (unit.index, unit.within, unit.length)
        let what = "L2 entry \(entry.index) of L2 table \(entry.table) (cluster \(cluster), guest offset \(cluster << clusterBits))"
        switch QCOWClusterEntry(raw: entry.raw, clusterBits: header.clusterBits) {
        case .unallocated:
            return .absent(length)
        case let .data(host):
            let needed = min(clusterSize, virtualSize - (cluster << clusterBits))
            if host % clusterSize != 0 {
                throw KDCTError.corrupt("\(what) points to offset \(host), not aligned to the cluster size \(clusterSize)",
                                        file: file.path, field: "L2 entry")
            }
            if host > file.size || needed > file.size - host {
                throw KDCTError.corrupt("\(what) points to offset \(host), past the end of the file (\(file.size) bytes)",
                                        file: file.path, field: "L2 entry")
            }
            return .data(length, file, host + within)
        case let .compressed(host, size):
            if size == 0 {
                throw KDCTError.corrupt("\(what): compressed cluster at offset \(host) has size 0", file: file.path, field: "L2 entry")
            }
            if host > file.size || UInt64(size) > file.size - host {
                throw KDCTError.corrupt("\(what): compressed cluster of \(size) bytes at offset \(host) goes past the end of the file (\(file.size) bytes)",
                                        file: file.path, field: "L2 entry")
            }
            let unit = CompressedUnit(file: file, hostOffset: host, framing: .bounded(UInt64(size)), codec: .deflate,
                                      unitBytes: Int(clusterSize), shortUnitBytes: nil, within: Int(within),
                                      label: .cluster(index: cluster, guestOffset: cluster << clusterBits))
            return MappedRun(length: length, mapping: .compressed(unit))
        }
    }

    // MARK: Info

    static func makeInfo(file: ReadOnlyFile, header: QCOWHeader, l1Entries: Int,
                         backingReference: ImageReference?) -> ImageInfo {
        let fields: [(String, InfoValue)] = [
            ("version", .unsigned(1)),
            ("cluster-bits", .unsigned(UInt64(header.clusterBits))),
            ("l2-bits", .unsigned(UInt64(header.l2Bits))),
            ("l1-entries", .unsigned(UInt64(l1Entries))),
            ("l1-table-offset", .unsigned(header.l1TableOffset)),
            ("encrypted", .bool(false)),
            ("mtime", .unsigned(UInt64(header.mtime))),
        ]
        var notes: [String] = []
        if header.size != header.virtualSize {
            notes.append("size \(header.size) is not a multiple of 512; the last partial sector is dropped as qemu does")
        }
        return ImageInfo(format: .qcow, filename: file.path, virtualSize: header.virtualSize,
                         clusterSize: header.clusterSize, backingFilename: backingReference?.name,
                         references: backingReference.map { [$0] } ?? [],
                         formatSpecific: .object(fields), notes: notes, actualSize: file.allocatedSize)
    }
}
