#!/usr/bin/env bash
# Regenerates the committed fixture images and SHA256SUMS (the SHA-256 of each image's guest content as qemu-img
# reads it). Needs qemu-img, qemu-io and python3. Run from anywhere: ./Fixtures/make-fixtures.sh
set -euo pipefail
cd "$(dirname "$0")"
rm -rf images && mkdir images && cd images

# A 2 MiB + 1.5 KiB guest: random data, text, written zeros and holes at unaligned offsets.
python3 - <<'PY'
import random
size = 2 * 1024 * 1024 + 1536
buf = bytearray(size)
rng = random.Random(20261127)
def fill(off, n, kind):
    if kind == "r":
        buf[off:off + n] = bytes(rng.getrandbits(8) for _ in range(n))
    else:
        text = b"KDCT-native fixture text at offset %d. " % off
        buf[off:off + n] = (text * (n // len(text) + 1))[:n]
fill(0, 4096, "r")
fill(65536 - 700, 1500, "t")
fill(200003, 70001, "r")
fill(1048576 + 511, 3000, "t")
fill(size - 5000, 5000, "r")
with open("pattern.raw", "wb") as f:
    f.write(buf)
PY
fallocate -d pattern.raw 2>/dev/null || true

q() { qemu-img convert -f raw pattern.raw "$@"; }
q -O qcow2 -o compat=0.10 pattern-v2.qcow2
q -O qcow2 -o compat=1.1,cluster_size=4096 pattern-v3-4k.qcow2
qemu-io -f qcow2 -c "write -z 200k 16k" pattern-v3-4k.qcow2 >/dev/null
q -O qcow2 -c pattern-deflate.qcow2
q -O qcow2 -c -o compression_type=zstd pattern-zstd.qcow2
q -O qcow2 -o extended_l2=on,cluster_size=32768 pattern-extl2.qcow2
qemu-io -f qcow2 -c "write -z 1M 8k" pattern-extl2.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b pattern-v2.qcow2 -F qcow2 chain-child.qcow2
qemu-io -f qcow2 -c "write -P 0xab 4096 8192" -c "write -z 200k 4k" chain-child.qcow2 >/dev/null
q -O vdi pattern.vdi
q -O vmdk -o subformat=monolithicSparse pattern.vmdk
q -O vmdk -o subformat=streamOptimized pattern-stream.vmdk
q -O vpc -o subformat=dynamic pattern.vhd
q -O vpc -o subformat=fixed,force_size=on pattern-fixed.vhd
q -O vhdx -o block_size=1M pattern.vhdx
q -O qcow pattern.qcow
q -O qed -o cluster_size=4096 pattern.qed

: > ../SHA256SUMS
tmp=$(mktemp)
for f in *; do
    case "$f" in
        *.vhd) fmt=vpc ;; *.raw) fmt=raw ;; *) fmt=${f##*.} ;;
    esac
    # Always name the format: qemu probes a fixed VHD (footer only at the end) as raw.
    qemu-img convert -f "$fmt" -O raw "$f" "$tmp"
    echo "$(sha256sum < "$tmp" | cut -d' ' -f1)  $f" >> ../SHA256SUMS
done
rm -f "$tmp"
cat ../SHA256SUMS
du -sh .
