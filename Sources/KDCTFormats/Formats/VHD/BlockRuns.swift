/// One run inside a block of a VHD or VHDX: its status, where its bytes start in the file (data only) and where
/// it ends in the guest.
struct BlockRun {
    var status: Extent.Status
    var host: UInt64?
    var end: UInt64
}

/// Extent merging and reading over per-block runs, shared by the VHD and VHDX readers (both map the guest
/// block by block through a BAT, with optional per-sector bitmaps).
enum BlockRuns {
    /// The extent at `offset`, merging the runs `run(position)` yields up to `end` while their status is the same
    /// and, for data, their file offsets stay contiguous.
    @inline(__always)
    static func extent(at offset: UInt64, to end: UInt64, run: (UInt64) throws -> BlockRun) rethrows -> Extent {
        let first = try run(offset)
        var cursor = first.end
        while cursor < end {
            let next = try run(cursor)
            guard next.status == first.status else { break }
            if let host = first.host {
                guard next.host == host + (cursor - offset) else { break }
            }
            cursor = next.end
        }
        return Extent(offset: offset, length: cursor - offset, status: first.status, hostOffset: first.host)
    }

    /// Fills `buffer` (guest bytes at `offset`): data runs are read straight into it with `readHost`, the rest is
    /// zeroed.
    @inline(__always)
    static func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64,
                     run: (UInt64, UInt64) throws -> BlockRun,
                     readHost: (UnsafeMutableRawBufferPointer, UInt64, UInt64) throws -> Void) rethrows {
        let end = offset + UInt64(buffer.count)
        var position = offset
        while position < end {
            let current = try run(position, end)
            let start = Int(position - offset)
            let slice = UnsafeMutableRawBufferPointer(rebasing: buffer[start..<(start + Int(current.end - position))])
            if let host = current.host {
                try readHost(slice, host, position)
            } else {
                slice.initializeMemory(as: UInt8.self, repeating: 0)
            }
            position = current.end
        }
    }
}
