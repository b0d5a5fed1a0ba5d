/// A run of guest bytes that all have one status, as returned by `BlockDevice.extent(at:maxLength:)`.
///
/// `file`, `hostOffset` and `depth` say where the run lives: `depth` layers below the image the device was opened
/// from, in `file`, at `hostOffset`. They carry the values `qemu-img map` prints (`depth`, `offset`, and the file
/// name of its human output).
public struct Extent: Sendable, Equatable, CustomStringConvertible {
    /// What a run of guest bytes holds in one layer.
    public enum Status: String, Sendable, Equatable {
        /// The layer stores data for this run (it may still happen to be zeros).
        case data
        /// The layer states that the run reads as zeros (zero cluster, hole, zero block state).
        case zero
        /// No layer covers the run: it reads as zeros. Reported at the depth of the layer that ends the search (the
        /// bottom layer, or a layer whose backing file is shorter than the run's offset), as qemu-img reports it.
        case absent
    }

    /// Guest offset of the first byte.
    public var offset: UInt64
    /// Number of bytes in the run (never 0 for an extent returned by a reader).
    public var length: UInt64
    /// Status of every byte of the run.
    public var status: Status
    /// The run is stored compressed (only meaningful for `.data`).
    public var compressed: Bool
    /// When non-nil, the run is stored contiguously in `file` starting at this file offset (for `.zero`: the file
    /// region that reads as zeros, such as a hole in a raw file).
    public var hostOffset: UInt64?
    /// The file holding the run's bytes: the one `hostOffset` is in, or the one holding a compressed run; nil when no
    /// file stores the run. Named as qemu-img names it: the image the device was opened from as the caller named it,
    /// each file it references (backing file, parent, VMDK extent) as the stored name combined with the directory
    /// part of the name of the image that refers to it (`base.qcow2` below `top.qcow2`).
    public var file: String?
    /// How many layers below the top this run comes from (0 = the top image).
    public var depth: Int

    /// Creates an extent.
    public init(offset: UInt64, length: UInt64, status: Status, compressed: Bool = false,
                hostOffset: UInt64? = nil, file: String? = nil, depth: Int = 0) {
        self.offset = offset
        self.length = length
        self.status = status
        self.compressed = compressed
        self.hostOffset = hostOffset
        self.file = file
        self.depth = depth
    }

    /// First byte after the run (`offset + length`; a reader never returns a run that overflows).
    public var end: UInt64 { offset + length }

    public var description: String {
        var text = "[\(offset), +\(length)) \(status.rawValue)"
        if compressed { text += " compressed" }
        if let hostOffset { text += " @\(hostOffset)" }
        if let file { text += " in \(file)" }
        if depth > 0 { text += " depth \(depth)" }
        return text
    }

    /// True when `next` directly follows this extent and can be merged into it without losing information: the same
    /// status, compression, depth and file, and host offsets (when there are any) that continue this run's.
    public func canMerge(with next: Extent) -> Bool {
        guard next.offset == end, next.status == status, next.compressed == compressed, next.depth == depth,
              next.file == file else {
            return false
        }
        switch (hostOffset, next.hostOffset) {
        case (nil, nil): return true
        case let (a?, b?): return a.addingReportingOverflow(length) == (b, false)
        default: return false
        }
    }
}
