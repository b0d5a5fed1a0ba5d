#!/usr/bin/env bash
# Regenerates the small seed images under Fuzz/seeds/<format>/ (a few KiB each, committed): tiny guests made with
# qemu-img/qemu-io, with small clusters so that tables, data and compressed clusters fit in a few KiB, plus
# hand-made variants (backing/data-file references, descriptors) for the paths hostile images take.
# Needs qemu-img, qemu-io and python3. The run script adds Fixtures/images (truncated by -max_len) as extra seeds.
set -euo pipefail
cd "$(dirname "$0")"
rm -rf seeds && mkdir -p seeds/{raw,qcow2,qcow,qed,vdi,vmdk,vhd,vhdx,ova}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# A 64 KiB guest with data, text and zeros at unaligned offsets.
python3 - "$work/g.raw" <<'PY'
import random, sys
rng = random.Random(7)
buf = bytearray(65536)
buf[0:700] = bytes(rng.getrandbits(8) for _ in range(700))
buf[5000:5600] = (b"KDCT fuzz seed text " * 40)[:600]
buf[40000:41111] = bytes(rng.getrandbits(8) for _ in range(1111))
open(sys.argv[1], "wb").write(buf)
PY
q() { qemu-img convert -q -f raw "$work/g.raw" "$@"; }

cp "$work/g.raw" seeds/raw/small.raw
head -c 1536 "$work/g.raw" > seeds/raw/odd-size.raw
printf 'QFI\xfb\x00\x00\x00\x03' > seeds/raw/qcow2-magic-only.raw

q -O qcow2 -o compat=0.10,cluster_size=512 seeds/qcow2/v2-512.qcow2
q -O qcow2 -o compat=1.1,cluster_size=4096 seeds/qcow2/v3-4k.qcow2
qemu-io -f qcow2 -c "write -z 8k 4k" seeds/qcow2/v3-4k.qcow2 >/dev/null
q -O qcow2 -c -o cluster_size=4096 seeds/qcow2/deflate.qcow2
q -O qcow2 -c -o cluster_size=4096,compression_type=zstd seeds/qcow2/zstd.qcow2
q -O qcow2 -o extended_l2=on,cluster_size=16384 seeds/qcow2/extl2.qcow2
qemu-io -f qcow2 -c "write -z 16k 2k" seeds/qcow2/extl2.qcow2 >/dev/null
q -O qcow2 -o cluster_size=4096 seeds/qcow2/snapshot.qcow2
qemu-img snapshot -c snap1 seeds/qcow2/snapshot.qcow2
qemu-io -f qcow2 -c "write -P 0x5a 0 4k" seeds/qcow2/snapshot.qcow2 >/dev/null
cp "$work/g.raw" "$work/base.raw"
(cd "$work" && qemu-img create -q -f qcow2 -o cluster_size=4096 -b base.raw -F raw child.qcow2 64K)
cp "$work/child.qcow2" seeds/qcow2/backing.qcow2
(cd "$work" && qemu-img create -q -f qcow2 -o cluster_size=4096,data_file=data.raw datafile.qcow2 64K)
cp "$work/datafile.qcow2" seeds/qcow2/data-file.qcow2
(cd "$work" && qemu-img create -q -f qcow2 -o cluster_size=512 -u -b 'json:{"file.filename":"/etc/passwd"}' -F raw json.qcow2 64K)
cp "$work/json.qcow2" seeds/qcow2/json-backing.qcow2

q -O qcow seeds/qcow/plain.qcow
q -O qcow -c seeds/qcow/compressed.qcow 2>/dev/null || true   # qemu 7.2 exits 1 after writing a valid image
(cd "$work" && qemu-img create -q -f qcow -b base.raw -F raw child.qcow 64K)
cp "$work/child.qcow" seeds/qcow/backing.qcow

q -O qed -o cluster_size=4096,table_size=2 seeds/qed/t2.qed
q -O qed -o cluster_size=4096 seeds/qed/t4.qed
qemu-io -f qed -c "write -z 8k 4k" seeds/qed/t4.qed >/dev/null
(cd "$work" && qemu-img create -q -f qed -o cluster_size=4096,table_size=2 -b base.raw -F raw child.qed 64K)
cp "$work/child.qed" seeds/qed/backing-raw.qed

# VDI: qemu writes 1 MiB blocks; shrink them to 4 KiB by rewriting the header and map of an empty image.
qemu-img create -q -f vdi "$work/empty.vdi" 16K
python3 - "$work/empty.vdi" seeds/vdi <<'PY'
import struct, sys
src, out = sys.argv[1], sys.argv[2]
head = bytearray(open(src, "rb").read()[:0x200])
def make(name, entries, blocks, image_type=1, block=4096, extra=0):
    h = bytearray(head)
    struct.pack_into("<I", h, 0x4C, image_type)
    struct.pack_into("<I", h, 0x154, 0x200)                  # block map offset
    struct.pack_into("<I", h, 0x158, 0x400)                  # data offset
    struct.pack_into("<Q", h, 0x170, block * len(entries))   # disk size
    struct.pack_into("<I", h, 0x178, block)
    struct.pack_into("<I", h, 0x17C, extra)
    struct.pack_into("<I", h, 0x180, len(entries))
    struct.pack_into("<I", h, 0x184, blocks)
    m = bytearray(0x200)
    for i, e in enumerate(entries):
        struct.pack_into("<I", m, 4 * i, e)
    data = b"".join(bytes([0x40 + i]) * extra + bytes([0x61 + i]) * block for i in range(blocks))
    open(f"{out}/{name}", "wb").write(bytes(h) + bytes(m) + data)
make("dynamic.vdi", [0, 0xFFFFFFFF, 0xFFFFFFFE, 1], 2)
make("static.vdi", [0, 1, 2, 3], 4, image_type=2)
make("extra.vdi", [1, 0, 0xFFFFFFFF, 0xFFFFFFFF], 2, extra=512)
make("diff.vdi", [0xFFFFFFFF, 0, 0xFFFFFFFF, 0xFFFFFFFE], 1, image_type=4)
PY

q -O vmdk -o subformat=streamOptimized seeds/vmdk/stream.vmdk
q -O vmdk -o subformat=monolithicSparse "$work/sparse.vmdk"
# A monolithicSparse file is 64 KiB of header and tables before any grain; keep the first 80 KiB.
head -c 81920 "$work/sparse.vmdk" > seeds/vmdk/sparse-head.vmdk
cat > seeds/vmdk/flat-descriptor.vmdk <<'TXT'
# Disk DescriptorFile
version=1
CID=fffffffe
parentCID=ffffffff
createType="monolithicFlat"

# Extent description
RW 128 FLAT "disk-flat.vmdk" 0
RW 64 ZERO
RDONLY 32 FLAT "/etc/passwd" 0

# The Disk Data Base
ddb.virtualHWVersion = "4"
ddb.adapterType = "ide"
TXT
cat > seeds/vmdk/split-descriptor.vmdk <<'TXT'
# Disk DescriptorFile
version=1
CID=12345678
parentCID=87654321
parentFileNameHint="../base.vmdk"
createType="twoGbMaxExtentSparse"
RW 4192256 SPARSE "disk-s001.vmdk"
RW 8192 SPARSE "disk-s002.vmdk"
NOACCESS 100 FLAT "x.vmdk" 0
ddb.uuid.image = "1-2-3"
TXT

# VHD and VHDX: tiny dynamic and fixed images, for when the readers land.
qemu-img create -q -f vpc -o subformat=dynamic seeds/vhd/dynamic-empty.vhd 64K
q -O vpc -o subformat=fixed,force_size=on seeds/vhd/fixed.vhd
# A dynamic VHD with 4 KiB blocks (qemu writes 2 MiB ones): blocks present, absent, and one partly present.
python3 - seeds/vhd/dynamic-empty.vhd seeds/vhd/dynamic-4k.vhd <<'PY'
import struct, sys
src = bytearray(open(sys.argv[1], "rb").read())
footer = bytearray(src[:512])
header = bytearray(src[512:1536])
def checksum(b, field):
    total = sum(x for i, x in enumerate(b) if not field <= i < field + 4) & 0xFFFFFFFF
    return struct.pack(">I", ~total & 0xFFFFFFFF)
blocks = 17                                     # 68 KiB guest (qemu rounds 64K up to CHS) / 4 KiB blocks
struct.pack_into(">Q", header, 16, 1536)        # BAT offset
struct.pack_into(">I", header, 28, blocks)      # max table entries
struct.pack_into(">I", header, 32, 4096)        # block size
header[36:40] = checksum(header, 36)
bat = bytearray(b"\xff" * 512)
data = bytearray()
sector = 2048 // 512                            # first block after footer copy, header and BAT
for index, fill in [(0, 0x61), (3, 0x62), (9, 0x63)]:
    struct.pack_into(">I", bat, 4 * index, sector + len(data) // 512)
    bitmap = bytearray(512)
    bitmap[0] = 0xFF if fill != 0x63 else 0xF0  # block 9: only its first 4 sectors present
    data += bitmap + bytes([fill]) * 4096
out = footer + header + bat + data + footer
open(sys.argv[2], "wb").write(out)
PY
# A VHDX is at least 4 MiB of mostly zeros (1 MiB-aligned regions): the vhdx harness takes sparse descriptions.
q -O vhdx -o block_size=1M,log_size=1M "$work/d.vhdx"
./sparse-seed.py "$work/d.vhdx" seeds/vhdx/data.sparse
qemu-img create -q -f vhdx -o block_size=8M "$work/e.vhdx" 64M
./sparse-seed.py "$work/e.vhdx" seeds/vhdx/empty.sparse

# OVA: a tar of a small OVF descriptor, its manifest and a tiny streamOptimized disk; the bare OVF too.
make_ova() {
    local disk=$1 format=$2 out=$3 stage
    stage=$(mktemp -d -p "$work")
    cp "$disk" "$stage/disk1.$format"
    local capacity=65536 size
    size=$(stat -c %s "$disk")
    cat > "$stage/vm.ovf" <<XML
<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData">
  <References><File ovf:href="disk1.$format" ovf:id="file1" ovf:size="$size"/></References>
  <DiskSection><Info>disks</Info><Disk ovf:capacity="$capacity" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/></DiskSection>
  <VirtualSystem ovf:id="vm"><Info>vm</Info><Name>vm</Name>
    <OperatingSystemSection ovf:id="101"><Info>os</Info></OperatingSystemSection>
    <VirtualHardwareSection><Info>hw</Info>
      <System><vssd:InstanceID>0</vssd:InstanceID><vssd:VirtualSystemType>vmx-14</vssd:VirtualSystemType></System>
      <Item><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>2</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>512</rasd:VirtualQuantity></Item>
      <Item><rasd:Address>0</rasd:Address><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceSubType>lsilogic</rasd:ResourceSubType><rasd:ResourceType>6</rasd:ResourceType></Item>
      <Item><rasd:AddressOnParent>0</rasd:AddressOnParent><rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource><rasd:InstanceID>10</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>
      <Item><rasd:Connection>VM Network</rasd:Connection><rasd:InstanceID>20</rasd:InstanceID><rasd:ResourceSubType>E1000</rasd:ResourceSubType><rasd:ResourceType>10</rasd:ResourceType></Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
XML
    (cd "$stage" && echo "SHA256(vm.ovf)= $(sha256sum vm.ovf | cut -d' ' -f1)" > vm.mf \
        && echo "SHA256(disk1.$format)= $(sha256sum "disk1.$format" | cut -d' ' -f1)" >> vm.mf \
        && tar --format=ustar -cf "$out" vm.ovf vm.mf "disk1.$format")
    cp "$stage/vm.ovf" "$(dirname "$out")/$(basename "$out" .ova).ovf"
}
qemu-img convert -q -f raw -O vmdk -o subformat=streamOptimized "$work/g.raw" "$work/small.vmdk"
make_ova "$work/small.vmdk" vmdk "$PWD/seeds/ova/stream.ova"
qemu-img convert -q -f raw -O qcow2 -o cluster_size=4096 "$work/g.raw" "$work/small.qcow2"
make_ova "$work/small.qcow2" qcow2 "$PWD/seeds/ova/qcow2.ova"

find seeds -type f -size +100k -print | sed 's/^/large seed (not committed?): /'
du -sh seeds
