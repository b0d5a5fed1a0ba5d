/// What `QCOW2Checker` found.
public struct QCOW2CheckReport: Sendable {
    /// Inconsistencies that make the image unsafe to write (refcount too low or mismatched, overlapping metadata,
    /// tables or clusters past the end of the file, bad COPIED flags).
    public var corruptions: [String] = []
    /// Clusters with a refcount but no reference.
    public var leakedClusters: [UInt64] = []
    /// Guest clusters mapped to host data (allocated), of `totalGuestClusters`.
    public var allocatedClusters: UInt64 = 0
    /// Guest clusters in the image.
    public var totalGuestClusters: UInt64 = 0
    /// Allocated clusters that are compressed.
    public var compressedClusters: UInt64 = 0
    /// Allocated clusters whose host cluster does not follow the previous one's.
    public var fragmentedClusters: UInt64 = 0
    /// The first byte after the last used cluster.
    public var imageEndOffset: UInt64 = 0
    /// Remarks (parts not checked).
    public var notes: [String] = []

    /// No corruption and no leak.
    public var isClean: Bool { corruptions.isEmpty && leakedClusters.isEmpty }
}

/// Structural check of a QCOW2 image, as `qemu-img check` does it read-only: rebuilds every cluster's expected
/// refcount from the metadata (header, L1/L2 tables of the active layer and of every snapshot, refcount structures,
/// snapshot table, data and compressed clusters) and compares it with the stored refcounts.
public enum QCOW2Checker {
    /// Most corruption messages kept (the count is still exact in the totals).
    static let maxMessages = 1000

    /// Checks the image at `path`.
    public static func check(path: String, limits: ImageLimits = ImageLimits()) throws -> QCOW2CheckReport {
        let file = try ReadOnlyFile(path: path)
        do {
            return try check(file: file, limits: limits)
        } catch let error as KDCTError {
            throw error.inFile(path)
        }
    }

    /// Checks an open file.
    public static func check(file: ReadOnlyFile, limits: ImageLimits) throws -> QCOW2CheckReport {
        let image = try QCOW2Image(file: file, limits: limits)
        let header = image.header
        let clusterSize = header.clusterSize
        var report = QCOW2CheckReport()
        let fileClusters = (file.size + clusterSize - 1) / clusterSize
        try ImageLimits.check("host clusters to check", fileClusters, max: limits.maxTableBytes / 2)

        var expected = [UInt32](repeating: 0, count: Int(fileClusters))
        var kinds = [UInt8](repeating: 0, count: Int(fileClusters))   // 0 none, 1 metadata, 2 data
        func corrupt(_ message: String) {
            if report.corruptions.count < maxMessages { report.corruptions.append(message) }
        }
        /// Adds one reference to every cluster of `[offset, offset+length)`.
        func reference(_ offset: UInt64, _ length: UInt64, what: String, metadata: Bool) {
            guard length > 0 else { return }
            let (end, overflow) = offset.addingReportingOverflow(length)
            guard !overflow, end <= fileClusters * clusterSize else {
                corrupt("\(what) at 0x\(String(offset, radix: 16)) (+\(length)) lies past the end of the file")
                return
            }
            for cluster in Int(offset / clusterSize)...Int((end - 1) / clusterSize) {
                if metadata && kinds[cluster] != 0 {
                    corrupt("\(what) at cluster \(cluster) overlaps other \(kinds[cluster] == 1 ? "metadata" : "data")")
                } else if !metadata && kinds[cluster] == 1 {
                    corrupt("\(what) at cluster \(cluster) overlaps metadata")
                }
                kinds[cluster] = max(kinds[cluster], metadata ? 1 : 2)
                expected[cluster] &+= 1
            }
        }

        reference(0, UInt64(header.headerLength), what: "header", metadata: true)
        reference(header.refcountTableOffset, UInt64(header.refcountTableClusters) * clusterSize,
                  what: "refcount table", metadata: true)

        // Stored refcounts.
        let tableBytes = UInt64(header.refcountTableClusters) * clusterSize
        try ImageLimits.check("refcount table size", tableBytes, max: limits.maxTableBytes)
        try header.checkTable("refcount_table_offset", offset: header.refcountTableOffset, length: tableBytes,
                              fileSize: file.size)
        let refcountTable = TableDecoding.uint64BigEndian(
            try file.readBytes(count: Int(tableBytes), at: header.refcountTableOffset, what: "refcount table"))
        let bits = UInt64(1) << UInt64(header.refcountOrder)
        let entriesPerBlock = clusterSize * 8 / bits
        var stored = [UInt64](repeating: 0, count: Int(fileClusters))
        for (index, entry) in refcountTable.enumerated() {
            let offset = entry & QCOW2Entry.offsetMask
            guard offset != 0 else { continue }
            if offset % clusterSize != 0 || offset + clusterSize > file.size {
                corrupt("refcount block \(index) at 0x\(String(offset, radix: 16)) is unaligned or past the end of the file")
                continue
            }
            reference(offset, clusterSize, what: "refcount block \(index)", metadata: true)
            let block = try file.readBytes(count: Int(clusterSize), at: offset, what: "refcount block \(index)")
            for i in 0..<Int(entriesPerBlock) {
                let cluster = UInt64(index) * entriesPerBlock + UInt64(i)
                let value = refcountValue(block, index: i, bits: bits)
                if cluster < fileClusters {
                    stored[Int(cluster)] = value
                } else if value != 0 {
                    corrupt("refcount for cluster \(cluster) beyond the end of the file is \(value)")
                }
            }
        }

        // Active L1 and every snapshot's L1.
        var tables: [(name: String, offset: UInt64, size: UInt32, active: Bool)] = [("active L1", header.l1TableOffset, header.l1Size, true)]
        if header.snapshotCount > 0 {
            let length = QCOW2Snapshot.tableReadLength(count: Int(header.snapshotCount), fileSize: file.size,
                                                       offset: header.snapshotsOffset)
            let snapshotBytes = try file.readBytes(count: length, at: header.snapshotsOffset, what: "snapshot table")
            var end = 0
            // Re-walk to learn the table's exact length.
            var offset = 0
            let r = ByteReader(snapshotBytes, structure: "qcow2 snapshot table")
            for _ in 0..<Int(header.snapshotCount) {
                let extra = Int(try r.u32be(offset + 36))
                let idSize = Int(try r.u16be(offset + 12))
                let nameSize = Int(try r.u16be(offset + 14))
                offset = (offset + 40 + extra + idSize + nameSize + 7) / 8 * 8
                end = offset
            }
            reference(header.snapshotsOffset, UInt64(end), what: "snapshot table", metadata: true)
            for snapshot in image.snapshots {
                tables.append(("snapshot \(snapshot.id) L1", snapshot.l1TableOffset, snapshot.l1Size, false))
            }
        }
        if header.hasBitmaps {
            report.notes.append("persistent bitmaps are present; their clusters are not checked and may show as leaks")
        }

        var seenL2: [UInt64: Int] = [:]
        for table in tables where table.size > 0 {
            let bytes = UInt64(table.size) * 8
            try ImageLimits.check("\(table.name) size", bytes, max: limits.maxTableBytes)
            guard table.offset % clusterSize == 0, table.offset + bytes <= file.size else {
                corrupt("\(table.name) at 0x\(String(table.offset, radix: 16)) is unaligned or past the end of the file")
                continue
            }
            reference(table.offset, bytes, what: table.name, metadata: true)
            let l1 = TableDecoding.uint64BigEndian(try file.readBytes(count: Int(bytes), at: table.offset, what: table.name))
            var previousHost: UInt64 = 0
            for (l1Index, l1Entry) in l1.enumerated() {
                let l2Offset = l1Entry & QCOW2Entry.offsetMask
                guard l2Offset != 0 else { continue }
                guard l2Offset % clusterSize == 0, l2Offset + clusterSize <= file.size else {
                    corrupt("\(table.name) entry \(l1Index): L2 table at 0x\(String(l2Offset, radix: 16)) is unaligned or past the end of the file")
                    continue
                }
                if table.active { checkCopied(l1Entry, cluster: l2Offset / clusterSize, stored: stored, what: "L1 entry \(l1Index)", corrupt: corrupt) }
                let first = seenL2[l2Offset] == nil
                seenL2[l2Offset, default: 0] += 1
                reference(l2Offset, clusterSize, what: "L2 table (\(table.name) entry \(l1Index))", metadata: first)
                if !first { continue }
                let l2 = TableDecoding.uint64BigEndian(try file.readBytes(count: Int(clusterSize), at: l2Offset, what: "L2 table"))
                let step = header.extendedL2 ? 2 : 1
                var index = 0
                while index < l2.count {
                    let entry = l2[index]
                    let guestCluster = UInt64(l1Index) * header.l2Entries + UInt64(index / step)
                    index += step
                    if entry & QCOW2Entry.compressedFlag != 0 {
                        let (host, size) = QCOW2Entry.compressedDescriptor(entry, clusterBits: header.clusterBits)
                        reference(host & ~511, min(size + (host & 511), file.size - min(file.size, host & ~511)),
                                  what: "compressed cluster (guest cluster \(guestCluster))", metadata: false)
                        if table.active { report.allocatedClusters += 1; report.compressedClusters += 1 }
                        if entry & (1 << 63) != 0 { corrupt("compressed cluster for guest cluster \(guestCluster) has the COPIED flag") }
                        continue
                    }
                    let host = entry & QCOW2Entry.offsetMask
                    guard host != 0 else { continue }
                    if host % clusterSize != 0 {
                        corrupt("L2 entry for guest cluster \(guestCluster): data offset 0x\(String(host, radix: 16)) is not cluster-aligned")
                        continue
                    }
                    reference(host, clusterSize, what: "data cluster (guest cluster \(guestCluster))", metadata: false)
                    if table.active {
                        checkCopied(entry, cluster: host / clusterSize, stored: stored,
                                    what: "L2 entry for guest cluster \(guestCluster)", corrupt: corrupt)
                        report.allocatedClusters += 1
                        if previousHost != 0 && host != previousHost + clusterSize { report.fragmentedClusters += 1 }
                        previousHost = host
                    }
                }
            }
        }

        var lastUsed: UInt64 = 0
        for cluster in 0..<Int(fileClusters) {
            let want = UInt64(expected[cluster])
            let have = stored[cluster]
            if want > 0 || have > 0 { lastUsed = UInt64(cluster) + 1 }
            if want == have { continue }
            if want == 0 {
                report.leakedClusters.append(UInt64(cluster))
            } else {
                corrupt("cluster \(cluster): refcount=\(have) reference=\(want)")
            }
        }
        report.imageEndOffset = lastUsed * clusterSize
        report.totalGuestClusters = (header.size + clusterSize - 1) / clusterSize
        return report
    }

    /// The COPIED flag (bit 63) must be set exactly when the cluster's refcount is 1.
    private static func checkCopied(_ entry: UInt64, cluster: UInt64, stored: [UInt64], what: String,
                                    corrupt: (String) -> Void) {
        guard cluster < UInt64(stored.count) else { return }
        let copied = entry & (1 << 63) != 0
        let refcount = stored[Int(cluster)]
        if copied != (refcount == 1) {
            corrupt("OFLAG_COPIED \(what): refcount=\(refcount) but COPIED is \(copied ? "set" : "clear")")
        }
    }

    /// Entry `index` of a refcount block of `bits`-bit entries (qcow2.txt: sub-byte widths are packed LSB first,
    /// byte and wider widths are big-endian).
    static func refcountValue(_ block: [UInt8], index: Int, bits: UInt64) -> UInt64 {
        switch bits {
        case 1, 2, 4:
            let perByte = 8 / Int(bits)
            let byte = block[index / perByte]
            return UInt64(byte >> UInt8((index % perByte) * Int(bits))) & ((1 << bits) - 1)
        default:
            let width = Int(bits / 8)
            var value: UInt64 = 0
            for i in 0..<width { value = value << 8 | UInt64(block[index * width + i]) }
            return value
        }
    }
}
