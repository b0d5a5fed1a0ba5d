/// What a QED L2 table entry says about one data cluster (qed_spec.rst, "Data cluster offsets").
enum QEDClusterEntry: Sendable, Equatable {
    /// Offset 0: not allocated; read from the backing file, or zeros.
    case unallocated
    /// Offset 1: reads as zeros and hides the backing file.
    case zero
    /// The cluster's file offset (to be checked: cluster-aligned, after the header, inside the file).
    case data(offset: UInt64)

    /// Decodes a raw entry.
    init(raw: UInt64) {
        switch raw {
        case 0: self = .unallocated
        case 1: self = .zero
        default: self = .data(offset: raw)
        }
    }
}
