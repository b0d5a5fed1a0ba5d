/// A run of guest bytes that all have one status, as returned by `BlockDevice.extent(at:maxLength:)`.
public struct Extent: Sendable, Equatable, CustomStringConvertible {
    /// What a run of guest bytes holds in one layer.
    public enum Status: String, Sendable, Equatable {
        /// The layer stores data for this run (it may still happen to be zeros).
        case data
        /// The layer states that the run reads as zeros (zero cluster, hole, zero block state).
        case zero
        /// The layer does not cover the run: it reads from the layer below, or as zeros when there is none.
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
    /// When non-nil, the run is stored contiguously in `hostFile` starting at this file offset.
    public var hostOffset: UInt64?
    /// How many layers below the top this run comes from (0 = the top image), for `map`.
    public var depth: Int

    /// Creates an extent.
    public init(offset: UInt64, length: UInt64, status: Status, compressed: Bool = false,
                hostOffset: UInt64? = nil, depth: Int = 0) {
        self.offset = offset
        self.length = length
        self.status = status
        self.compressed = compressed
        self.hostOffset = hostOffset
        self.depth = depth
    }

    /// First byte after the run.
    public var end: UInt64 { offset + length }

    public var description: String {
        var text = "[\(offset), +\(length)) \(status.rawValue)"
        if compressed { text += " compressed" }
        if let hostOffset { text += " @\(hostOffset)" }
        if depth > 0 { text += " depth \(depth)" }
        return text
    }

    /// True when `next` directly follows this extent and can be merged into it without losing information.
    public func canMerge(with next: Extent) -> Bool {
        guard next.offset == end, next.status == status, next.compressed == compressed, next.depth == depth else {
            return false
        }
        switch (hostOffset, next.hostOffset) {
        case (nil, nil): return true
        case let (a?, b?): return a + length == b
        default: return false
        }
    }
}
