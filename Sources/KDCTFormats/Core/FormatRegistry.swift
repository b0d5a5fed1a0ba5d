/// Opens an image of one format from an open file.
typealias FormatReaderFunction = @Sendable (ReadOnlyFile, OpenContext) throws -> any BlockDevice

/// The reader of each format. A format without one is recognised by probing and refused as "not supported yet".
enum FormatRegistry {
    static func reader(for format: ImageFormat) -> FormatReaderFunction? {
        switch format {
        case .raw: return RawImage.open
        case .qcow2: return QCOW2Image.open
        case .qcow: return QCOWImage.open
        case .qed: return QEDImage.open
        case .vdi: return VDIImage.open
        case .vmdk: return VMDKImage.open
        case .vhd: return VHDImage.open
        case .vhdx: return VHDXImage.open
        }
    }
}
