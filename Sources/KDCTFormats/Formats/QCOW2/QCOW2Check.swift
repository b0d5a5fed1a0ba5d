/// Every host cluster's refcount as stored and as the metadata references it, the comparison `check` reports and
/// the leak repair corrects (block/qcow2-refcount.c, `qcow2_check_refcounts`).
struct QCOW2RefcountAudit {
    /// The refcount table as stored.
    var table: QCOW2RefcountTable
    /// Refcounts as stored, per host cluster of the file.
    var stored: [UInt64]
    /// References found in the metadata, per host cluster of the file.
    var referenced: [UInt32]
    /// The refcount blocks read: table index and file offset.
    var blocks: [(index: Int, offset: UInt64)]
    /// The active L1 table's cluster statistics.
    var statistics: QCOW2Image.CheckStatistics

    /// Clusters whose stored refcount is above their references (leaks, qemu's "Leaked cluster"), in order.
    var leakedClusters: [UInt64] {
        stored.indices.filter { stored[$0] > UInt64(referenced[$0]) }.map(UInt64.init)
    }
}

extension QCOW2Image: CheckableImage {
    /// Rebuilds every host cluster's refcount from the metadata, as `qemu-img check` does read-only, and compares
    /// it with the stored refcounts: references counted from the header cluster, the refcount table and blocks, the
    /// active L1 table and, once per L1 table naming them, the L2 tables and the clusters they map (so a cluster
    /// shared with internal snapshots counts once per snapshot, as qemu counts it), every snapshot's L1 table, the
    /// snapshot table and the persistent bitmaps. A refcount above the references is a leak, below it a corruption.
    /// Also reports overlapping metadata, tables and clusters past the end of the file, L1/L2 entries that do not
    /// decode (reserved bits, unaligned offsets) and wrong COPIED flags. The statistics are qemu's: the active L1
    /// table's allocated, compressed and fragmented clusters (fragmentation counted within each L2 table).
    func check(into log: CheckLog, limits: ImageLimits) throws {
        try check(into: log, limits: limits, audit: refcountAudit(log: log, limits: limits))
    }

    /// Records the comparison of `audit`'s refcounts and references, and the statistics, in `log`.
    func check(into log: CheckLog, limits: ImageLimits, audit: QCOW2RefcountAudit) throws {
        let clusterSize = header.clusterSize
        var lastUsed: UInt64 = 0
        for cluster in audit.stored.indices {
            let (have, want) = (audit.stored[cluster], UInt64(audit.referenced[cluster]))
            if have > 0 || want > 0 { lastUsed = UInt64(cluster) + 1 }
            if have > want {
                log.leak("Leaked cluster \(cluster) refcount=\(have) reference=\(want)")
            } else if have < want {
                log.corrupt("cluster \(cluster) refcount=\(have) reference=\(want)")
            }
        }
        if header.isDirty {
            log.note("the dirty bit is set (lazy refcounts): the refcounts may lag behind the references until qemu repairs them")
        }
        log.setStatistics(total: (header.size + clusterSize - 1) / clusterSize, allocated: audit.statistics.allocated,
                          fragmented: audit.statistics.fragmented, compressed: audit.statistics.compressed,
                          imageEnd: lastUsed * clusterSize)
    }

    /// The refcount comparison, with every problem found on the way recorded in `log`.
    func refcountAudit(log: CheckLog, limits: ImageLimits) throws -> QCOW2RefcountAudit {
        let clusterSize = header.clusterSize
        let fileClusters = (file.size + clusterSize - 1) / clusterSize
        try ImageLimits.check("host clusters to check", fileClusters, max: limits.maxTableBytes / 2)
        var references = ClusterReferences(clusters: fileClusters, clusterSize: clusterSize, log: log)

        references.add(0, clusterSize, what: "header", metadata: true)
        let tableBytes = UInt64(header.refcountTableClusters) * clusterSize
        try ImageLimits.check("refcount table size", tableBytes, max: limits.maxTableBytes)
        // A refcount table that cannot be read leaves every refcount 0: each referenced cluster is then a
        // corruption, as qemu-img check reports it.
        let table: QCOW2RefcountTable
        do {
            table = try QCOW2RefcountTable.read(from: file, header: header, limits: limits)
        } catch let error as KDCTError where error.code == .corrupt || error.code == .truncated {
            log.corrupt(error)
            table = QCOW2RefcountTable(clusterSize: clusterSize, refcountBits: 1 << UInt64(header.refcountOrder),
                                       tableOffset: header.refcountTableOffset,
                                       tableClusters: UInt64(header.refcountTableClusters), entries: [])
        }
        references.add(table.tableOffset, tableBytes, what: "refcount table", metadata: true)
        let (stored, blocks, pastEnd) = try table.storedRefcounts(in: file, clusters: fileClusters) { log.corrupt($0) }
        if pastEnd > 0 {
            log.note("\(pastEnd) cluster(s) past the end of the file have a non-zero refcount (not counted, as in qemu-img)")
        }
        for block in blocks {
            references.add(block.offset, clusterSize, what: "refcount block \(block.index)", metadata: true)
        }

        var walk = L1Walk(image: self, stored: stored, references: references, log: log)
        try walk.walk(tables, name: "active L1 table", offset: header.l1TableOffset, entries: header.l1Size, active: true)
        for snapshot in snapshots {
            let name = "snapshot \(snapshot.id) L1 table"
            do {
                try Self.checkL1(field: name, offset: snapshot.l1TableOffset, entries: snapshot.l1Size,
                                 covering: snapshot.virtualSize ?? 0, header: header, fileSize: file.size, limits: limits)
            } catch let error as KDCTError {
                log.corrupt(error)
                continue
            }
            let snapshotTables = try Self.openTables(file: file, header: header, l1Offset: snapshot.l1TableOffset,
                                                     l1Size: snapshot.l1Size, limits: limits)
            try walk.walk(snapshotTables, name: name, offset: snapshot.l1TableOffset, entries: snapshot.l1Size, active: false)
        }
        references = walk.references
        if header.snapshotCount > 0 {
            references.add(header.snapshotsOffset, UInt64(snapshotTableLength), what: "snapshot table", metadata: true)
        }
        if header.hasBitmaps { try referenceBitmaps(&references, log: log) }
        return QCOW2RefcountAudit(table: table, stored: stored, referenced: references.counts, blocks: blocks,
                                  statistics: walk.statistics)
    }

    /// The persistent bitmaps' directory, bitmap tables and data clusters (qcow2.txt, "Bitmaps").
    private func referenceBitmaps(_ references: inout ClusterReferences, log: CheckLog) throws {
        guard let directory = try QCOW2BitmapSizes.directory(file) else { return }
        references.add(directory.offset, directory.size, what: "bitmap directory", metadata: true)
        for (index, bitmap) in directory.entries.enumerated() {
            let bytes = UInt64(bitmap.tableEntries) * 8
            guard bitmap.tableOffset % header.clusterSize == 0, bitmap.tableOffset <= file.size,
                  bytes <= file.size - bitmap.tableOffset else {
                log.corrupt("bitmap \(index)'s table at 0x\(String(bitmap.tableOffset, radix: 16)) is unaligned or past the end of the file")
                continue
            }
            references.add(bitmap.tableOffset, bytes, what: "bitmap \(index) table", metadata: true)
            let entries = TableDecoding.uint64BigEndian(
                try file.readBytes(count: Int(bytes), at: bitmap.tableOffset, what: "bitmap \(index) table"))
            for entry in entries {
                let offset = entry & QCOW2Entry.offsetMask
                if offset != 0 { references.add(offset, header.clusterSize, what: "bitmap \(index) data", metadata: false) }
            }
        }
    }

    /// The active L1 table's cluster statistics, as qemu-img check reports them.
    struct CheckStatistics {
        var allocated: UInt64 = 0
        var compressed: UInt64 = 0
        var fragmented: UInt64 = 0
    }
}

/// How many times the metadata references each host cluster, and whether it holds metadata or data (to report
/// metadata overlapping anything).
private struct ClusterReferences {
    private(set) var counts: [UInt32]
    private var kinds: [UInt8]   // 0 nothing, 1 metadata, 2 data
    let clusterSize: UInt64
    let log: CheckLog

    init(clusters: UInt64, clusterSize: UInt64, log: CheckLog) {
        counts = [UInt32](repeating: 0, count: Int(clusters))
        kinds = [UInt8](repeating: 0, count: Int(clusters))
        self.clusterSize = clusterSize
        self.log = log
    }

    /// Adds one more reference to the cluster at `offset`, already counted as what it is (an L2 table named by a
    /// second L1 table).
    mutating func addAgain(_ offset: UInt64) {
        let cluster = Int(offset / clusterSize)
        if cluster < counts.count { counts[cluster] &+= 1 }
    }

    /// Adds one reference to every cluster of `[offset, offset+length)`.
    mutating func add(_ offset: UInt64, _ length: UInt64, what: @autoclosure () -> String, metadata: Bool) {
        guard length > 0 else { return }
        let (end, overflow) = offset.addingReportingOverflow(length)
        guard !overflow, end <= UInt64(counts.count) * clusterSize else {
            log.corrupt("\(what()) at 0x\(String(offset, radix: 16)) (+\(length)) lies past the end of the file")
            return
        }
        for cluster in Int(offset / clusterSize)...Int((end - 1) / clusterSize) {
            if metadata && kinds[cluster] != 0 {
                log.corrupt("\(what()) at cluster \(cluster) overlaps other \(kinds[cluster] == 1 ? "metadata" : "data")")
            } else if !metadata && kinds[cluster] == 1 {
                log.corrupt("\(what()) at cluster \(cluster) overlaps metadata")
            }
            kinds[cluster] = max(kinds[cluster], metadata ? 1 : 2)
            counts[cluster] &+= 1
        }
    }
}

/// The walk of one L1 table after another through the reader's own tables: each L2 table is walked once per L1
/// table naming it (qemu's `check_refcounts_l1`).
private struct L1Walk {
    let image: QCOW2Image
    let stored: [UInt64]
    var references: ClusterReferences
    let log: CheckLog
    var statistics = QCOW2Image.CheckStatistics()
    private var l2Tables: Set<UInt64> = []

    init(image: QCOW2Image, stored: [UInt64], references: ClusterReferences, log: CheckLog) {
        self.image = image
        self.stored = stored
        self.references = references
        self.log = log
    }

    mutating func walk(_ tables: TwoLevelTable, name: String, offset: UInt64, entries: UInt32, active: Bool) throws {
        references.add(offset, UInt64(entries) * 8, what: name, metadata: true)
        let header = image.header
        let clusterSize = header.clusterSize
        for l1Index in 0..<tables.directoryCount {
            let l2Offset: UInt64
            do {
                guard let decoded = try tables.tableOffset(l1Index) else { continue }
                l2Offset = decoded
            } catch let error as KDCTError {
                log.corrupt("\(name): \(error.message)")
                continue
            }
            if active {
                checkCopied(tables.directoryEntry(l1Index), cluster: l2Offset / clusterSize,
                            what: "L2 cluster: l1_index=\(l1Index) l1_entry=\(String(tables.directoryEntry(l1Index), radix: 16))")
            }
            // An L2 table shared by several L1 tables (internal snapshots) is metadata once, referenced each time.
            if l2Tables.insert(l2Offset).inserted {
                references.add(l2Offset, clusterSize, what: "L2 table (\(name) entry \(l1Index))", metadata: true)
            } else {
                references.addAgain(l2Offset)
            }
            var nextContiguous: UInt64 = 0
            try tables.forEachEntry(ofTable: l1Index, at: l2Offset) { entry in
                let guestCluster = UInt64(l1Index) * header.l2Entries + entry.index
                let location = QCOW2Entry.Location(file: nil, table: entry.table, index: entry.index,
                                                   guestOffset: guestCluster * clusterSize)
                let mapping: QCOW2ClusterMapping
                do {
                    mapping = try QCOW2Entry.decodeStandard(entry.raw, header: header, at: location)
                    if header.extendedL2 {
                        _ = try QCOW2Entry.decodeSubclusters(entry.raw, bitmap: entry.bitmap, from: 0, header: header,
                                                             at: location)
                    }
                } catch let error as KDCTError {
                    log.corrupt(error)
                    return
                }
                switch mapping {
                case .unallocated, .zero(host: nil):
                    return
                case let .compressed(host, size):
                    let range = QCOW2Entry.compressedRange(host: host, size: size, fileSize: image.file.size)
                    references.add(range.start, range.length, what: "compressed cluster (guest cluster \(guestCluster))",
                                   metadata: false)
                    if entry.raw & QCOW2Entry.copiedFlag != 0 {
                        log.corrupt("compressed cluster for guest cluster \(guestCluster) has the COPIED flag (l2_entry=\(String(entry.raw, radix: 16)))")
                    }
                    if active {
                        statistics.allocated += 1
                        statistics.compressed += 1
                        // Compressed clusters count as fragmented, as qemu counts them.
                        statistics.fragmented += 1
                    }
                case let .data(host), let .zero(host?):
                    references.add(host, clusterSize, what: "data cluster (guest cluster \(guestCluster))", metadata: false)
                    guard active else { return }
                    checkCopied(entry.raw, cluster: host / clusterSize,
                                what: "data cluster: l2_entry=\(String(entry.raw, radix: 16))")
                    statistics.allocated += 1
                    if nextContiguous != 0 && host != nextContiguous { statistics.fragmented += 1 }
                    nextContiguous = host + clusterSize
                }
            }
        }
    }

    /// The COPIED flag (bit 63) must be set exactly when the cluster's stored refcount is 1.
    private func checkCopied(_ entry: UInt64, cluster: UInt64, what: String) {
        guard cluster < UInt64(stored.count) else { return }
        let copied = entry & QCOW2Entry.copiedFlag != 0
        let refcount = stored[Int(cluster)]
        if copied != (refcount == 1) {
            log.corrupt("OFLAG_COPIED \(what) refcount=\(refcount)")
        }
    }
}
