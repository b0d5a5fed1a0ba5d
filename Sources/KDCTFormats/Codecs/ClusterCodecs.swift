import CDeflate
import CZlib
import CZstd

/// How compressed clusters are encoded.
public enum CompressionType: String, Sendable, CaseIterable {
    /// Raw deflate (RFC 1951), as qcow2 and qcow v1 store it.
    case deflate
    /// A zstd frame (qcow2 `compression_type` 1).
    case zstd
}

/// Compresses one cluster at a time. Not thread-safe: each worker owns one.
protocol ClusterCompressor: AnyObject {
    /// Compresses `input` into `output`; returns the compressed length, or nil when it does not fit in `output`
    /// (the caller then stores the cluster uncompressed).
    func compress(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws -> Int?
}

/// Makes a compressor of `type`.
func makeClusterCompressor(_ type: CompressionType) throws -> any ClusterCompressor {
    switch type {
    case .deflate: return try RawDeflateCompressor()
    case .zstd: return try ZstdCompressor()
    }
}

/// zlib raw deflate with a 4 KiB window (windowBits -12), level 6, memLevel 9: qemu's qcow2 settings, so the
/// clusters inflate under qemu's own 4 KiB-window decoder and any streaming decoder.
final class RawDeflateCompressor: ClusterCompressor {
    private var stream = z_stream()

    /// Creates a compressor at `level` (default 6, zlib's default and qemu's).
    init(level: Int32 = 6) throws {
        let result = kdct_deflateInit2(&stream, level, -12, 9, Z_DEFAULT_STRATEGY)
        guard result == Z_OK else { throw KDCTError(.io, "deflateInit2 failed with \(result)") }
    }

    deinit { deflateEnd(&stream) }

    func compress(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws -> Int? {
        guard deflateReset(&stream) == Z_OK else { throw KDCTError(.io, "deflateReset failed") }
        stream.next_in = UnsafeMutablePointer(mutating: input.baseAddress?.assumingMemoryBound(to: Bytef.self))
        stream.avail_in = uInt(input.count)
        stream.next_out = output.baseAddress?.assumingMemoryBound(to: Bytef.self)
        stream.avail_out = uInt(output.count)
        let result = deflate(&stream, Z_FINISH)
        if result == Z_STREAM_END { return output.count - Int(stream.avail_out) }
        if result == Z_OK || result == Z_BUF_ERROR { return nil }
        throw KDCTError(.io, "deflate failed with \(result)")
    }
}

/// zstd at its default level (3), one frame per cluster, as qemu writes qcow2 zstd clusters.
final class ZstdCompressor: ClusterCompressor {
    private let context: OpaquePointer

    /// Creates a compressor at `level`.
    init(level: Int32 = 3) throws {
        guard let context = ZSTD_createCCtx() else { throw KDCTError(.io, "ZSTD_createCCtx failed") }
        self.context = context
        ZSTD_CCtx_setParameter(context, ZSTD_c_compressionLevel, level)
        ZSTD_CCtx_setParameter(context, ZSTD_c_checksumFlag, 0)
    }

    deinit { ZSTD_freeCCtx(context) }

    func compress(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws -> Int? {
        let result = ZSTD_compress2(context, output.baseAddress, output.count, input.baseAddress, input.count)
        if ZSTD_isError(result) != 0 {
            if ZSTD_getErrorCode(result) == ZSTD_error_dstSize_tooSmall { return nil }
            throw KDCTError(.io, "zstd compression failed: \(String(cString: ZSTD_getErrorName(result)))")
        }
        return result
    }
}

/// Decoders for compressed clusters and grains. Thread-safe: each call takes a decoder context from a pool.
enum ClusterDecompression {
    private final class DeflateContext {
        let pointer: OpaquePointer
        init() throws {
            guard let pointer = libdeflate_alloc_decompressor() else { throw KDCTError(.io, "libdeflate_alloc_decompressor failed") }
            self.pointer = pointer
        }
        deinit { libdeflate_free_decompressor(pointer) }
    }

    private final class ZstdContext {
        let pointer: OpaquePointer
        init() throws {
            guard let pointer = ZSTD_createDCtx() else { throw KDCTError(.io, "ZSTD_createDCtx failed") }
            self.pointer = pointer
        }
        deinit { ZSTD_freeDCtx(pointer) }
    }

    private static let deflatePool = ObjectPool(maxKept: 64) { try DeflateContext() }
    private static let zstdPool = ObjectPool(maxKept: 64) { try ZstdContext() }

    /// The container around deflate data.
    enum DeflateWrapping: Sendable {
        /// RFC 1951 raw deflate (qcow2, qcow v1).
        case raw
        /// RFC 1950 zlib stream (VMDK grains).
        case zlib
    }

    /// Inflates `input` (which may carry trailing bytes after the stream) into exactly `output.count` bytes.
    /// Returns false when the data is not a valid stream or does not inflate to exactly that size.
    static func inflate(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer,
                               wrapping: DeflateWrapping = .raw) throws -> Bool {
        try deflatePool.with { context in
            var consumed = 0
            var produced = 0
            let result: libdeflate_result
            switch wrapping {
            case .raw:
                result = libdeflate_deflate_decompress_ex(context.pointer, input.baseAddress, input.count,
                                                          output.baseAddress, output.count, &consumed, &produced)
            case .zlib:
                result = libdeflate_zlib_decompress_ex(context.pointer, input.baseAddress, input.count,
                                                       output.baseAddress, output.count, &consumed, &produced)
            }
            return result == LIBDEFLATE_SUCCESS && produced == output.count
        }
    }

    /// Decodes one zstd frame from the start of `input` (trailing bytes ignored) into exactly `output.count` bytes.
    /// Returns false when it is not a valid frame or does not decode to exactly that size.
    static func zstdDecompress(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws -> Bool {
        let frameSize = ZSTD_findFrameCompressedSize(input.baseAddress, input.count)
        if ZSTD_isError(frameSize) != 0 { return false }
        return try zstdPool.with { context in
            let result = ZSTD_decompressDCtx(context.pointer, output.baseAddress, output.count, input.baseAddress, frameSize)
            return ZSTD_isError(result) == 0 && result == output.count
        }
    }

    /// Decodes a compressed cluster of `type`.
    static func decompress(_ type: CompressionType, _ input: UnsafeRawBufferPointer,
                                  into output: UnsafeMutableRawBufferPointer) throws -> Bool {
        switch type {
        case .deflate: return try inflate(input, into: output, wrapping: .raw)
        case .zstd: return try zstdDecompress(input, into: output)
        }
    }
}
