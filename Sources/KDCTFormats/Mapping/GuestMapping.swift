/// What a reader answers about one run of guest bytes in its layer, and nothing more: the shared driver
/// (`MappedDevice`) turns these answers into extents and reads (FORMATS.md, "Mapping").
///
/// Modelled on cloud-hypervisor's block crate: a reader maps a guest range (absent, zero, stored at a file offset,
/// compressed), then the driver does plain positional I/O.
enum GuestMapping {
    /// This layer does not hold the run: the layer below supplies it, or it reads as zeros when there is none.
    case absent
    /// The run reads as zeros. With a location when the layer also says where (a hole in a raw file, a preallocated
    /// zero cluster), as qemu-img map reports it.
    case zero(HostLocation?)
    /// The run is stored uncompressed and contiguously at this location.
    case data(HostLocation)
    /// The run lies in one compressed unit (cluster or grain).
    case compressed(CompressedUnit)
}

/// A byte offset in a host file.
struct HostLocation {
    /// The file holding the bytes.
    let file: any HostFile
    /// Where the run's first byte is.
    var offset: UInt64
}

/// One run of guest bytes with one mapping, as a reader returns it: `length` bytes from the offset asked for.
struct MappedRun {
    /// Bytes in the run (at least 1, never past the end asked for).
    var length: UInt64
    /// Where they live.
    var mapping: GuestMapping
    /// Layers below the device the run comes from (0: the device's own image; a chain adds one per layer).
    var depth: Int = 0

    /// An absent run.
    static func absent(_ length: UInt64) -> MappedRun { MappedRun(length: length, mapping: .absent) }
    /// A zero run without a host location.
    static func zero(_ length: UInt64) -> MappedRun { MappedRun(length: length, mapping: .zero(nil)) }
    /// A data run at `offset` in `file`.
    static func data(_ length: UInt64, _ file: any HostFile, _ offset: UInt64) -> MappedRun {
        MappedRun(length: length, mapping: .data(HostLocation(file: file, offset: offset)))
    }
}

/// One compressed cluster or grain, and which part of it a run covers.
struct CompressedUnit {
    /// How the unit's bytes are encoded.
    enum Codec {
        /// RFC 1951 raw deflate (QCOW2 `compression_type` 0, QCOW v1).
        case deflate
        /// RFC 1950 zlib stream (VMDK grains).
        case zlib
        /// One zstd frame (QCOW2 `compression_type` 1).
        case zstd
    }

    /// Where the compressed stream is.
    enum Framing {
        /// The stream starts at `hostOffset` and lies within this many bytes (a bound: trailing bytes are ignored,
        /// and the file may end first).
        case bounded(UInt64)
        /// A streamOptimized VMDK grain marker (sector number, compressed size; VMDK spec, "Stream-Optimized
        /// Compressed Sparse Extents") precedes the stream at `hostOffset`; its sector must be `lba`.
        case grainMarker(lba: UInt64)
    }

    /// What the unit is, for error messages.
    enum Label {
        /// A QCOW/QCOW2 cluster: its index and guest offset.
        case cluster(index: UInt64, guestOffset: UInt64)
        /// A VMDK grain: its grain table entry and guest offset.
        case grain(table: UInt64, entry: UInt64, guestOffset: UInt64)
    }

    /// The file holding the compressed bytes.
    let file: any HostFile
    /// Where they start.
    var hostOffset: UInt64
    var framing: Framing
    var codec: Codec
    /// Bytes the unit decompresses to (the cluster or grain size).
    var unitBytes: Int
    /// The last grain of a VMDK extent may instead decompress to exactly its bytes inside the extent (qemu writes it
    /// so); nil when only `unitBytes` is valid.
    var shortUnitBytes: Int?
    /// Offset of the run's first byte inside the decompressed unit.
    var within: Int
    var label: Label

    /// Host bytes a read of this unit may touch from `hostOffset` (the bound, or for a grain marker the marker and a
    /// stream no longer than the grain plus a sector), for read-ahead; the file's end clips it.
    var prefetchLength: UInt64 {
        switch framing {
        case let .bounded(bound): return bound
        case .grainMarker: return UInt64(unitBytes) + 1024
        }
    }
}

/// A file that runs point into: an image file, a VMDK extent file, or a VHDX file seen through its replayed log.
protocol HostFile: AnyObject, Sendable {
    /// The path the file was opened with (errors name it).
    var path: String { get }
    /// Bytes that can be read.
    var size: UInt64 { get }
    /// Reads exactly `buffer.count` bytes at `offset`; the file ending first is `truncated`, naming `what`.
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64, what: @autoclosure () -> String) throws
    /// Reads up to `buffer.count` bytes at `offset`, fewer only at the end of the file; returns the count.
    func readAvailable(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int
    /// Starts reading `[offset, offset + length)` into the page cache without waiting (a hint; clipped to the file,
    /// never fails).
    func prefetch(offset: UInt64, length: UInt64)
}

extension ReadOnlyFile: HostFile {}
