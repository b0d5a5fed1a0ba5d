/// The names extents give the files a device reads: the device's own image file as it was opened, and every file it
/// references (a backing file, a parent, a VMDK extent) as the stored reference combined with the name of the image
/// naming it, layer by layer, exactly as qemu-img names them (`base.qcow2` below `top.qcow2`,
/// `/vms/base.qcow2` below `/vms/top.qcow2`).
///
/// Names are kept relative to the device's own file while a chain is built bottom-up, so a layer opened through a
/// resolved path still shows the name its referrer gave it.
struct HostFileNames: Sendable {
    /// The name of the device's own image file (the top layer's file as opened).
    let root: String
    /// Each file's name relative to `root` ("" for the root file itself).
    private var relative: [ObjectIdentifier: String]

    /// The names of a device that reads only `file`, its own image file.
    init(_ file: any HostFile) {
        root = file.path
        relative = [ObjectIdentifier(file): ""]
    }

    /// The names of a device whose image file is `root` and which also reads `others`, each named by the reference
    /// stored in the image (`""` for the image file itself).
    init(root: String, files: [(file: any HostFile, reference: String)]) {
        self.root = root
        relative = [:]
        for (file, reference) in files { relative[ObjectIdentifier(file)] = reference }
    }

    /// The names of a chain: `top`'s files, and `base`'s files as seen through `reference`, the name `top` gives
    /// its base.
    init(top: HostFileNames, base: HostFileNames, reference: String) {
        root = top.root
        relative = top.relative
        for (file, name) in base.relative where relative[file] == nil {
            relative[file] = name.isEmpty ? reference : Self.combine(reference, name)
        }
    }

    /// The name of `file` as qemu-img would print it, or its own path for a file this device does not know.
    func name(of file: any HostFile) -> String {
        guard let name = relative[ObjectIdentifier(file)] else { return file.path }
        return name.isEmpty ? root : Self.combine(root, name)
    }

    /// qemu's `path_combine`: `name` when it is absolute, else `name` in the directory part of `base` (everything up
    /// to its last `/`), without normalising `.` or `..`.
    static func combine(_ base: String, _ name: String) -> String {
        if name.hasPrefix("/") { return name }
        guard let slash = base.lastIndex(of: "/") else { return name }
        return String(base[...slash]) + name
    }
}
