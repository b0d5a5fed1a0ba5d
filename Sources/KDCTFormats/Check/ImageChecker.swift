/// Structural checks of images of every format (`kdct-native check`), with qemu-img check's counts, statistics and
/// exit statuses, and the repair of QCOW2 leaks.
///
/// An image is opened with its format's own reader, which records the problems it finds in its tables instead of
/// failing on the first (`OpenContext.report`), then the reader walks its decoded tables (`CheckableImage`): QCOW2
/// refcounts against references, QCOW v1 and QED tables, VMDK grain directories and tables, VDI block maps, VHD and
/// VHDX BATs; entries past the end of the file, overlapping structures, duplicate blocks. Only the image named is
/// checked, not its backing file or parent (which are opened under the reference policy, as for reading). See
/// FORMATS.md, "check", for what each format's check covers.
public enum ImageChecker {
    /// Problem lines kept in a report at most (the counts stay exact).
    public static let maxMessages = 1000

    /// Checks the image at `path`. Throws when the check cannot complete (a header that does not decode, a
    /// referenced file that cannot be opened, a table above the limits, a read error): qemu-img check's exit
    /// status 1, with no report, as qemu-img when it cannot open the image.
    public static func check(_ path: String, options: OpenOptions = OpenOptions()) throws -> ImageCheckReport {
        try ImageOpener.refuseTemporaryOutput(path)
        let file = try ReadOnlyFile(path: path)
        var options = options
        options.snapshot = nil
        options.openReferences = true
        let format = try ImageOpener.detectFormat(file, options: options)
        let log = CheckLog(filename: path, format: format)
        let context = OpenContext(options: options, depth: 0, visited: [file.identity], problems: log)
        let device = try ImageOpener.open(file: file, context: context)
        guard let image = topLayer(of: device) as? CheckableImage else {
            log.note("a raw image has no metadata to check")
            return log.report
        }
        do {
            try image.check(into: log, limits: options.limits)
        } catch let error as KDCTError {
            throw error.inFile(path)
        }
        return log.report
    }

    /// Repairs the leaked clusters of the QCOW2 image at `path` (`check -r leaks`; `-r all` repairs nothing more):
    /// every refcount above its references is lowered to them. The repair is never made in place: the image is
    /// copied to a temporary file beside it (only its data ranges, with `copy_file_range`, so a sparse image stays
    /// sparse and a reflink-capable file system shares the blocks), the refcount blocks are corrected in the copy,
    /// which is flushed and renamed over the image. An image held by another process (a running VM) is refused, and
    /// nothing is changed when the check finds corruptions or cannot complete (it throws then). Returns the check of the repaired
    /// image with `leaksFixed` set (or the first check, when nothing was repaired).
    public static func repairLeaks(_ path: String, options: OpenOptions = OpenOptions()) throws -> ImageCheckReport {
        try ImageOpener.refuseTemporaryOutput(path)
        let file = try ReadOnlyFile(path: path)
        let format = try ImageOpener.detectFormat(file, options: options)
        guard format == .qcow2 else {
            throw KDCTError(.unsupported,
                            "repairs are made only to qcow2 images (their leaked clusters); this image is \(format.qemuName) and was not changed",
                            file: path, field: "repair")
        }
        try claimImage(descriptor: file.descriptor, path: path)
        let image = try QCOW2Image(file: file, limits: options.limits)
        let log = CheckLog(filename: path, format: .qcow2)
        let audit: QCOW2RefcountAudit
        do {
            audit = try image.refcountAudit(log: log, limits: options.limits)
            try image.check(into: log, limits: options.limits, audit: audit)
        } catch let error as KDCTError {
            throw error.inFile(path)
        }
        let found = log.report
        guard found.leaks > 0 else { return found }
        guard found.corruptions == 0 else {
            log.note("the leaks were not repaired: the image has corruptions, and kdct-native repairs only leaks")
            return log.report
        }
        let fixed = try QCOW2LeakRepair.write(audit, of: file, to: path)
        var repaired = try check(path, options: options)
        repaired.leaksFixed = fixed
        return repaired
    }

    /// The top layer of a chain (the image itself otherwise).
    static func topLayer(of device: any BlockDevice) -> any BlockDevice {
        if let chain = device as? ChainedBlockDevice { return topLayer(of: chain.top) }
        return device
    }
}

/// A QCOW2 image with its leaked refcounts corrected, written as a copy that replaces it.
enum QCOW2LeakRepair {
    /// Copies `file` to a temporary file beside `path`, lowers each leaked cluster's refcount in the copy to its
    /// references, flushes the copy and renames it over `path`. Returns how many refcounts were corrected.
    static func write(_ audit: QCOW2RefcountAudit, of file: ReadOnlyFile, to path: String) throws -> Int {
        let table = audit.table
        var blocks: [Int: [UInt8]] = [:]
        let leaked = audit.leakedClusters
        for cluster in leaked {
            let (block, index) = table.position(ofCluster: cluster)
            guard let offset = table.blockOffset(block) else { continue }
            var bytes = try blocks[block]
                ?? file.readBytes(count: Int(table.clusterSize), at: offset, what: "refcount block \(block)")
            QCOW2RefcountTable.setValue(UInt64(audit.referenced[Int(cluster)]), in: &bytes, index: index,
                                        bits: table.refcountBits)
            blocks[block] = bytes
        }
        let target = try LocalFileTarget(destination: path, overwrite: true)
        do {
            var offset: UInt64 = 0
            while let data = try file.nextData(from: offset) {
                let hole = try file.nextHole(from: data)
                try target.copy(from: file, at: data, to: data, length: hole - data)
                offset = hole
            }
            for (block, bytes) in blocks {
                guard let offset = table.blockOffset(block) else { continue }
                try bytes.withUnsafeBytes { try target.write($0, at: offset) }
            }
            try target.setLength(file.size)
            try target.commit()
        } catch {
            target.abort()
            throw error
        }
        return leaked.count
    }
}
