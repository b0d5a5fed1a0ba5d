/// A backing/parent chain as one device: ranges the top layer does not hold (`.absent`) are mapped by the layer
/// below, one depth further down; below the bottom layer, or past the end of the layer below, they stay absent and
/// read as zeros. Reported as qemu-img reports it: an absent run carries the depth of the layer that ended the
/// search (`present: false` at depth 0 past the end of a shorter backing file).
///
/// The chain is on the shared driver like any reader: its runs are the layers' own runs, so a read goes straight to
/// the file of the layer that holds each range. Flattening a chain is converting this device.
final class ChainedBlockDevice: MappedDevice {
    /// The image on top (the one the user named).
    let top: any MappedDevice
    /// The layer below (itself possibly a chain).
    let base: any MappedDevice
    let hostFileNames: HostFileNames

    /// Layers `top` over `base`; `reference` is the name `top` gives its base (a stored backing file name, a parent
    /// path), which extents combine with the top's name to name the base's files.
    init(top: any MappedDevice, base: any MappedDevice, reference: String) {
        self.top = top
        self.base = base
        hostFileNames = HostFileNames(top: top.hostFileNames, base: base.hostFileNames, reference: reference)
    }

    /// Layers `top` over `base`, a device opened through `OpenContext` (always one of this library's readers).
    convenience init(top: any MappedDevice, opened base: any BlockDevice, reference: String) throws {
        guard let mapped = base as? any MappedDevice else {
            throw KDCTError(.unsupported, "the layer below is not a device this library can chain",
                            file: top.hostFileNames.root, field: "backing file")
        }
        self.init(top: top, base: mapped, reference: reference)
    }

    var virtualSize: UInt64 { top.virtualSize }

    var info: ImageInfo {
        var info = top.info
        let below = base.info
        info.backingChain = [below] + below.backingChain
        info.backingChain[0].backingChain = []
        return info
    }

    func mapping(at offset: UInt64, upTo end: UInt64) throws -> MappedRun {
        let upper = try top.mapping(at: offset, upTo: end)
        guard case .absent = upper.mapping, offset < base.virtualSize else { return upper }
        var lower = try base.mapping(at: offset, upTo: min(offset + upper.length, base.virtualSize))
        lower.depth += 1
        return lower
    }
}
