/// What `ImageChecker` found in one image: the counts and fields `qemu-img check` reports (block/qapi's
/// `ImageCheck`), the lines naming each problem, and what KDCT adds as notes.
///
/// The exit status follows qemu-img: 0 clean, 1 the check itself could not complete (`checkErrors`), 2 corruption,
/// 3 leaked clusters only.
public struct ImageCheckReport: Sendable, Equatable {
    /// The image as the caller named it.
    public var filename: String
    /// Its format.
    public var format: ImageFormat
    /// Inconsistencies that make the image unsafe to use or to write (qemu's `corruptions`).
    public var corruptions: Int = 0
    /// Space referenced by nothing, or counted more often than it is referenced: waste, no harm to data (`leaks`).
    public var leaks: Int = 0
    /// Internal errors during the check (`check-errors`, always printed); a check that cannot complete throws
    /// instead, so a returned report has 0.
    public var checkErrors: Int = 0
    /// Corruptions repaired (`corruptions-fixed`; KDCT repairs none).
    public var corruptionsFixed: Int = 0
    /// Leaks repaired by `ImageChecker.repairLeaks` (`leaks-fixed`).
    public var leaksFixed: Int = 0
    /// Guest clusters of the image (`total-clusters`), where the format reports it.
    public var totalClusters: UInt64?
    /// Guest clusters allocated in this layer (`allocated-clusters`).
    public var allocatedClusters: UInt64?
    /// Allocated clusters not following the previous one in the file (`fragmented-clusters`).
    public var fragmentedClusters: UInt64?
    /// Allocated clusters stored compressed (`compressed-clusters`).
    public var compressedClusters: UInt64?
    /// The end of the last cluster in use (`image-end-offset`).
    public var imageEndOffset: UInt64?
    /// One line per problem, as qemu-img prints them on stderr (`ERROR ...`, `Leaked cluster ...`); at most
    /// `ImageChecker.maxMessages` are kept, the counts stay exact.
    public var messages: [String] = []
    /// Remarks: what was not checked, what qemu-img would do differently.
    public var notes: [String] = []

    /// A report on `filename` in `format`, with nothing found yet.
    package init(filename: String, format: ImageFormat) {
        self.filename = filename
        self.format = format
    }

    /// No corruption, no leak and a complete check.
    public var isClean: Bool { corruptions == 0 && leaks == 0 && checkErrors == 0 }

    /// qemu-img check's exit status: 1 when the check could not complete, else 2 for corruptions, 3 for leaks
    /// only, 0 when clean.
    public var exitStatus: Int32 {
        if checkErrors > 0 { return 1 }
        if corruptions > 0 { return 2 }
        if leaks > 0 { return 3 }
        return 0
    }

    /// The report with `qemu-img check --output json`'s keys, in the order qemu-img 7.2 prints them; like qemu, a
    /// count or size that is 0 (or unknown) is left out, except `check-errors`.
    public var jsonValue: InfoValue {
        var pairs: [(String, InfoValue)] = []
        func add(_ key: String, _ value: UInt64?) {
            if let value, value != 0 { pairs.append((key, .unsigned(value))) }
        }
        add("image-end-offset", imageEndOffset)
        add("compressed-clusters", compressedClusters)
        add("total-clusters", totalClusters)
        add("corruptions", UInt64(corruptions))
        add("corruptions-fixed", UInt64(corruptionsFixed))
        pairs.append(("check-errors", .unsigned(UInt64(checkErrors))))
        add("leaks", UInt64(leaks))
        add("leaks-fixed", UInt64(leaksFixed))
        add("allocated-clusters", allocatedClusters)
        pairs.append(("filename", .string(filename)))
        pairs.append(("format", .string(format.qemuName)))
        add("fragmented-clusters", fragmentedClusters)
        return .object(pairs)
    }

    /// The summary `qemu-img check` prints on stdout (its `dump_human_image_check`).
    public var humanText: String {
        var out = ""
        if isClean {
            out += "No errors were found on the image.\n"
        } else {
            if corruptions > 0 {
                out += "\n\(corruptions) errors were found on the image.\n"
                out += "Data may be corrupted, or further writes to the image may corrupt it.\n"
            }
            if leaks > 0 {
                out += "\n\(leaks) leaked clusters were found on the image.\n"
                out += "This means waste of disk space, but no harm to data.\n"
            }
            if checkErrors > 0 {
                out += "\n\(checkErrors) internal errors have occurred during the check.\n"
            }
        }
        if let total = totalClusters, let allocated = allocatedClusters, total > 0, allocated > 0 {
            let percent = { (part: UInt64, whole: UInt64) in Self.twoDecimals(Double(part) * 100 / Double(whole)) }
            out += "\(allocated)/\(total) = \(percent(allocated, total))% allocated, "
            out += "\(percent(fragmentedClusters ?? 0, allocated))% fragmented, "
            out += "\(percent(compressedClusters ?? 0, allocated))% compressed clusters\n"
        }
        if let end = imageEndOffset, end > 0 { out += "Image end offset: \(end)\n" }
        return out
    }

    /// `%0.2f` without Foundation (ties to even, as printf rounds 15.625 to 15.62).
    static func twoDecimals(_ value: Double) -> String {
        let hundredths = Int((value * 100).rounded(.toNearestOrEven))
        let fraction = hundredths % 100
        return "\(hundredths / 100).\(fraction < 10 ? "0" : "")\(fraction)"
    }
}
