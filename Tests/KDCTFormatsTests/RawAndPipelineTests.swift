import Foundation
import Testing
@testable import KDCTFormats
import KDCTTestSupport

@Suite struct RawAndPipelineTests {
    @Test func rawToRawAndQcow2MatchesSource() throws {
        let dir = try TemporaryDirectory()
        let source = try TestPattern.writeRaw(to: dir.file("src.img"), size: 12 << 20 + 12345)
        try convertImage(source, to: dir.file("out.raw"), format: .raw)
        try expectQemuIdentical(source, dir.file("out.raw"), formatA: "raw", formatB: "raw")
        try convertImage(source, to: dir.file("out.qcow2"), format: .qcow2)
        try expectQemuIdentical(source, dir.file("out.qcow2"), formatA: "raw", formatB: "qcow2")
        try expectQemuCheckClean(dir.file("out.qcow2"))
        for type in CompressionType.allCases {
            let out = dir.file("out-\(type).qcow2")
            try convertImage(source, to: out, format: .qcow2, compress: true, compressionType: type)
            try expectQemuIdentical(source, out, formatA: "raw", formatB: "qcow2")
            try expectQemuCheckClean(out)
        }
    }

    @Test func rawReaderFindsHoles() throws {
        let dir = try TemporaryDirectory()
        let source = try TestPattern.writeRaw(to: dir.file("src.img"), size: 64 << 20)
        let device = try ImageOpener.open(source)
        let extents = try device.allExtents()
        let data = extents.filter { $0.status == .data }.reduce(0) { $0 + $1.length }
        #expect(data < 8 << 20, "a sparse raw file should report holes, got \(data) data bytes")
        #expect(extents.first?.status == .data)
    }
}
