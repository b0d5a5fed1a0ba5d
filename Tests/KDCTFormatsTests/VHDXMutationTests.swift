import Foundation
import Testing
@testable import KDCTFormats
import KDCTTestSupport

/// Deterministic byte mutations of the metadata of VHD and VHDX files: every one must open and read, or fail with
/// a `KDCTError`; none may trap.
@Suite struct VHDXMutationTests {
    /// xorshift64 stream.
    struct Random {
        var state: UInt64
        mutating func next() -> UInt64 {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            return state
        }
        mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
    }

    /// Applies `count` mutations per file at offsets drawn from `areas`, opening and hashing each result.
    static func mutate(_ original: [UInt8], areas: [Range<Int>], count: Int, seed: UInt64, dir: TemporaryDirectory,
                       name: String) throws -> (opened: Int, failed: Int) {
        var random = Random(state: seed)
        var opened = 0, failed = 0
        let path = dir.file(name)
        for _ in 0..<count {
            var bytes = original
            for _ in 0..<(1 + random.below(4)) {
                let area = areas[random.below(areas.count)]
                let offset = area.lowerBound + random.below(area.count)
                switch random.below(3) {
                case 0: bytes[offset] ^= UInt8(1 << random.below(8))
                case 1: bytes[offset] = UInt8(truncatingIfNeeded: random.next())
                default: bytes[offset] = [0x00, 0xFF, 0x7F, 0x80][random.below(4)]
                }
            }
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            do {
                let device = try ImageOpener.open(path)
                _ = try GuestDigest.sha256(of: device)
                opened += 1
            } catch is KDCTError {
                failed += 1
            }
        }
        return (opened, failed)
    }

    @Test func mutatedVHDXNeverTraps() throws {
        let dir = try TemporaryDirectory()
        let (logged, _) = VHDXBuiltTests.loggedDisk()
        var parent = VHDXTestBuilder(virtualSize: 6 << 20)
        parent.blocks[1] = .full(VHDTestBuilder.noise(1 << 20, seed: 7))
        try parent.write(to: dir.file("parent.vhdx"))
        var differencing = VHDXTestBuilder(virtualSize: 6 << 20)
        differencing.parentLocator = [("parent_linkage", "{\(parent.dataWriteGUID)}"), ("relative_path", "parent.vhdx")]
        differencing.blocks[0] = .full(VHDTestBuilder.noise(1 << 20, seed: 1))
        differencing.blocks[1] = .partial(VHDTestBuilder.noise(1 << 20, seed: 2), present: [3..<70])
        differencing.blocks[2] = .zero
        let mib = 1 << 20
        let areas = [0..<1024, (64 << 10)..<((64 << 10) + 96), (128 << 10)..<((128 << 10) + 96),
                     (192 << 10)..<((192 << 10) + 112), mib..<(mib + 20480),
                     (2 * mib)..<(2 * mib + 256), (2 * mib + (64 << 10))..<(2 * mib + (64 << 10) + 200),
                     (3 * mib)..<(3 * mib + 64)]
        for (index, builder) in [logged, differencing].enumerated() {
            let result = try Self.mutate(builder.build(), areas: areas, count: 150, seed: 0x5EED + UInt64(index),
                                         dir: dir, name: "m\(index).vhdx")
            #expect(result.opened + result.failed == 150)
        }
    }

    @Test func mutatedVHDNeverTraps() throws {
        let dir = try TemporaryDirectory()
        var builder = VHDTestBuilder(virtualSize: 6 << 20)
        let sectors = Int(builder.blockSize / 512)
        builder.blocks[0] = .init(bitmap: VHDTestBuilder.bitmap(sectors: sectors, present: [0..<sectors]),
                                  data: VHDTestBuilder.noise(Int(builder.blockSize), seed: 1))
        builder.blocks[2] = .init(bitmap: VHDTestBuilder.bitmap(sectors: sectors, present: [5..<9]),
                                  data: VHDTestBuilder.noise(Int(builder.blockSize), seed: 2))
        builder.diskType = 4
        builder.parentName = "missing.vhd"
        builder.locators = [.init(code: "W2ru", data: VHDTestBuilder.utf16le(".\\missing.vhd"))]
        let bytes = builder.build()
        let result = try Self.mutate(bytes, areas: [0..<512, 512..<1536, 1536..<2560, (bytes.count - 512)..<bytes.count],
                                     count: 300, seed: 0xD15C, dir: dir, name: "m.vhd")
        #expect(result.opened + result.failed == 300)
    }
}
