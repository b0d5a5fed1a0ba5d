extension QEDImage: CheckableImage {
    /// qemu's `qed_check`: every cluster the tables name is referenced once (the L1 table, each L2 table, each data
    /// cluster); L1 entries that do not name a valid table were recorded while opening, L2 entries that do not name a
    /// cluster-aligned offset after the header with the cluster inside the file are corruptions; clusters after the
    /// header that nothing references are leaks (counted only when every table was read). Statistics as qemu's:
    /// total, allocated and fragmented clusters.
    func check(into log: CheckLog, limits: ImageLimits) throws {
        let fileClusters = (file.size + clusterSize - 1) / clusterSize
        try ImageLimits.check("host clusters to check", fileClusters, max: limits.maxTableBytes * 8)
        var used = ClusterBitmap(count: fileClusters)
        /// Marks `count` clusters from `offset` used; false (and a corruption per cluster) when one already was.
        func use(_ offset: UInt64, clusters count: UInt64, _ what: @autoclosure () -> String) -> Bool {
            var clean = true
            for cluster in (offset / clusterSize)..<(offset / clusterSize + count) where cluster < fileClusters {
                if used.testAndSet(cluster) {
                    log.corrupt("cluster \(cluster) (\(what())) is referenced more than once")
                    clean = false
                }
            }
            return clean
        }
        for cluster in 0..<min(UInt64(header.headerSize), fileClusters) { _ = used.testAndSet(cluster) }
        _ = use(header.l1TableOffset, clusters: UInt64(header.tableSize), "L1 table")
        var (allocated, fragmented): (UInt64, UInt64) = (0, 0)
        for l1Index in 0..<tables.directoryCount {
            // Bad L1 entries were recorded and left out while opening.
            guard let l2Offset = try? tables.tableOffset(l1Index) else { continue }
            guard use(l2Offset, clusters: UInt64(header.tableSize), "L2 table \(l1Index)") else { continue }
            // As qemu counts them: every data entry is allocated, valid or not; fragmentation within one table.
            var previous: UInt64 = 0
            try tables.forEachEntry(ofTable: l1Index, at: l2Offset) { entry in
                guard case let .data(host) = QEDClusterEntry(raw: entry.raw) else { return }
                allocated += 1
                if previous != 0 && host != previous + clusterSize { fragmented += 1 }
                previous = host
                let cluster = UInt64(l1Index) * header.tableEntries + entry.index
                do {
                    try checkDataOffset(host, entry: entry, cluster: cluster)
                } catch let error as KDCTError {
                    log.corrupt(error)
                    return
                }
                _ = use(host, clusters: 1, "data of guest cluster \(cluster)")
            }
        }
        for cluster in UInt64(header.headerSize)..<max(UInt64(header.headerSize), fileClusters) where !used.test(cluster) {
            log.leak("Leaked cluster \(cluster)")
        }
        log.setStatistics(total: (header.imageSize + clusterSize - 1) / clusterSize, allocated: allocated,
                          fragmented: fragmented)
    }
}

/// One bit per host cluster: which clusters a check found referenced.
struct ClusterBitmap {
    private var words: [UInt64]

    /// `count` clear bits.
    init(count: UInt64) { words = [UInt64](repeating: 0, count: Int((count + 63) / 64)) }

    /// Whether bit `index` is set.
    func test(_ index: UInt64) -> Bool { words[Int(index / 64)] & (1 << (index % 64)) != 0 }

    /// Sets bit `index`; returns whether it was set before.
    mutating func testAndSet(_ index: UInt64) -> Bool {
        let was = test(index)
        words[Int(index / 64)] |= 1 << (index % 64)
        return was
    }
}
