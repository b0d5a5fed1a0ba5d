extension QCOWImage: CheckableImage {
    /// QCOW v1 has no refcounts, and qemu-img has no check for it: this check places every structure the tables
    /// name in the file and reports overlaps. L1 entries naming an unaligned table or one past the end of the file
    /// were recorded while opening; every L2 entry is decoded as a read decodes it (a data cluster aligned and inside
    /// the file, a compressed cluster of at least one byte inside the file); then the header with the backing file
    /// name, the L1 table, the L2 tables and the data and compressed clusters must not overlap each other (two
    /// entries naming the same cluster, a cluster written over a table). Unreferenced space is not reported: without
    /// refcounts it is not a defined leak.
    func check(into log: CheckLog, limits: ImageLimits) throws {
        var ranges = HostRanges(limit: Int(limits.maxTableBytes / 24))
        let headerEnd = max(UInt64(QCOWHeader.size), header.backingFileOffset + UInt64(header.backingFileSize))
        try ranges.add(0, length: headerEnd, label: TableRangeLabel.header.value)
        try ranges.add(header.l1TableOffset, length: header.l1Entries * 8, label: TableRangeLabel.directory.value)
        let l2Bytes = UInt64(header.l2Entries) * 8
        var allocated: UInt64 = 0
        var compressed: UInt64 = 0
        for l1Index in 0..<tables.directoryCount {
            // Bad L1 entries were recorded and left out while opening.
            guard let l2Offset = try? tables.tableOffset(l1Index) else { continue }
            try ranges.add(l2Offset, length: l2Bytes, label: TableRangeLabel.table(l1Index).value)
            try tables.forEachEntry(ofTable: l1Index, at: l2Offset) { entry in
                let cluster = UInt64(l1Index) * UInt64(header.l2Entries) + entry.index
                do {
                    switch try decode(entry, cluster: cluster) {
                    case .unallocated:
                        break
                    case let .data(host):
                        allocated += 1
                        try ranges.add(host, length: dataBytes(ofCluster: cluster), label: TableRangeLabel.unit(cluster).value)
                    case let .compressed(host, size):
                        allocated += 1
                        compressed += 1
                        try ranges.add(host, length: UInt64(size), label: TableRangeLabel.unit(cluster).value)
                    }
                } catch let error as KDCTError where error.code == .corrupt {
                    log.corrupt(error)
                }
            }
        }
        ranges.reportOverlaps(into: log) {
            TableRangeLabel(value: $0).name(directory: "the L1 table", table: "L2 table", unit: "the data of guest cluster")
        }
        log.setStatistics(total: (virtualSize + clusterSize - 1) / clusterSize, allocated: allocated,
                          compressed: compressed)
    }
}
