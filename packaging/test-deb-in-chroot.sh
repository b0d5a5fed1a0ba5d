#!/usr/bin/env bash
# Proves that the .deb works where the VMs are: installs it into a minimal Debian 12 (debootstrap --variant=minbase,
# no Swift, no qemu), lets apt resolve its Depends there, runs info, convert and checksum on committed fixtures
# inside that chroot, and checks every result OUTSIDE it with qemu-img and the fixtures' SHA256SUMS.
#
#   packaging/test-deb-in-chroot.sh DEB
#
# Run as root. The debootstrapped base system is kept as a tar file in .build-chroot-cache/ (git-ignored;
# KDCT_CHROOT_CACHE overrides the folder, delete it to refresh), so later runs unpack it instead of bootstrapping;
# each run starts from a fresh copy of it. KDCT_DEBIAN_MIRROR overrides http://deb.debian.org/debian.
# Needs on the host: debootstrap, qemu-img, python3, virt-xml-validate (libvirt-clients), tar, sha256sum.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)

fail() { echo "test-deb-in-chroot: FAIL: $*" >&2; exit 1; }
note() { echo "test-deb-in-chroot: $*"; }
trap 'echo "test-deb-in-chroot: FAIL: line $LINENO: $BASH_COMMAND (status $?)" >&2' ERR

[ $# -eq 1 ] || fail "usage: $0 DEB"
[ -f "$1" ] || fail "$1: no such file"
deb=$(readlink -f "$1")
[ "$(id -u)" -eq 0 ] || fail "must run as root (debootstrap, chroot and mount need it)"
for tool in debootstrap chroot mount umount findmnt mknod tar qemu-img python3 virt-xml-validate \
            sha256sum dpkg-deb; do
    command -v "$tool" >/dev/null || fail "'$tool' is not installed on the host"
done

suite=bookworm
arch=$(dpkg --print-architecture)
mirror=${KDCT_DEBIAN_MIRROR:-http://deb.debian.org/debian}
cache=${KDCT_CHROOT_CACHE:-"$repo/.build-chroot-cache"}
base_tar="$cache/$suite-minbase-$arch.tar"
fixtures="$repo/Fixtures/images"
deb_package=$(dpkg-deb -f "$deb" Package)
deb_version=$(dpkg-deb -f "$deb" Version)
[ "$deb_package" = kdct-native ] || fail "$deb is package '$deb_package', not kdct-native"

work=$(mktemp -d "${TMPDIR:-/tmp}/kdct-deb-chroot.XXXXXX")
[[ "$work" =~ ^[A-Za-z0-9/._-]+$ ]] || fail "temporary folder '$work' has characters this script does not handle"
root="$work/root"

# Unmounts everything below $root (deepest first), then deletes $work, but never while anything is still mounted
# there: rm must not reach into a mounted /proc or /dev.
cleanup() {
    local status=$? mounts
    trap - ERR
    mounts=$(findmnt -rn -o TARGET | grep -E "^$root(/|$)" | sort -r || true)
    for mount_point in $mounts; do
        umount "$mount_point" || echo "test-deb-in-chroot: could not unmount $mount_point" >&2
    done
    if findmnt -rn -o TARGET | grep -qE "^$root(/|$)"; then
        echo "test-deb-in-chroot: still mounted below $root; left $work in place" >&2
        exit 1
    fi
    rm -rf --one-file-system "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

total_start=$SECONDS
phase_start=$SECONDS
phase() { note "$1 took $((SECONDS - phase_start)) s"; phase_start=$SECONDS; }

# --- A minimal Debian 12: from the cache, or bootstrapped (and then cached) ---------------------------------------
mkdir -p "$root"
if [ -f "$base_tar" ]; then
    tar -xpf "$base_tar" -C "$root" --numeric-owner
    phase "unpacking the cached $suite minbase ($base_tar)"
else
    note "bootstrapping $suite minbase from $mirror (cached afterwards in $base_tar)"
    debootstrap --variant=minbase --arch="$arch" "$suite" "$root" "$mirror"
    rm -f "$root"/var/cache/apt/archives/*.deb
    mkdir -p "$cache"
    tar -cpf "$base_tar.part" -C "$root" --numeric-owner .
    mv "$base_tar.part" "$base_tar"
    phase "debootstrap --variant=minbase $suite"
fi
[ -x "$root/usr/bin/apt-get" ] || fail "$root has no apt-get: the base system is incomplete"

# /proc for the chroot, and a private /dev with only the usual nodes (nothing of the host's /dev is reachable).
mount -t proc proc "$root/proc"
mount -t tmpfs -o mode=0755,size=1m,nosuid kdct-chroot-dev "$root/dev"
mknod -m 0666 "$root/dev/null" c 1 3
mknod -m 0666 "$root/dev/zero" c 1 5
mknod -m 0666 "$root/dev/full" c 1 7
mknod -m 0666 "$root/dev/random" c 1 8
mknod -m 0666 "$root/dev/urandom" c 1 9
mknod -m 0666 "$root/dev/tty" c 5 0
ln -s /proc/self/fd "$root/dev/fd"
ln -s /proc/self/fd/0 "$root/dev/stdin"
ln -s /proc/self/fd/1 "$root/dev/stdout"
ln -s /proc/self/fd/2 "$root/dev/stderr"
cp -L /etc/resolv.conf "$root/etc/resolv.conf"

in_chroot() {
    chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
        DEBIAN_FRONTEND=noninteractive "$@"
}

# The point of the exercise: nothing of Swift or qemu in there.
[ ! -e "$root/opt/swift" ] || fail "the chroot has /opt/swift"
for tool in swift swiftc qemu-img qemu-io; do
    if in_chroot sh -c "command -v $tool" >/dev/null; then fail "the chroot has $tool"; fi
done
leftovers=$(find "$root" -xdev \( -name 'libswift*' -o -name 'libFoundation*' -o -name 'libdispatch*' \) -print)
[ -z "$leftovers" ] || fail "the chroot has Swift libraries: $leftovers"

# --- Install the .deb; apt resolves its Depends from the mirror ---------------------------------------------------
cp "$deb" "$root/tmp/kdct-native.deb"
chmod 0644 "$root/tmp/kdct-native.deb"
in_chroot apt-get update -q
in_chroot apt-get install -y -q --no-install-recommends /tmp/kdct-native.deb
installed=$(in_chroot dpkg-query -W -f='${Status} ${Version}' kdct-native)
[ "$installed" = "install ok installed $deb_version" ] || fail "dpkg says '$installed' for kdct-native"
for file in /usr/bin/kdct-native /usr/share/man/man1/kdct-native.1.gz /usr/share/doc/kdct-native/copyright \
            /usr/share/doc/kdct-native/README.md.gz /usr/share/doc/kdct-native/FORMATS.md.gz; do
    in_chroot dpkg-query -S "$file" >/dev/null || fail "the package does not install $file"
done
ldd_output=$(in_chroot ldd /usr/bin/kdct-native)
echo "$ldd_output"
if grep -q "not found" <<<"$ldd_output"; then fail "libraries missing in the chroot: $ldd_output"; fi
if grep -qiE "swift|Foundation|dispatch" <<<"$ldd_output"; then fail "the binary loads Swift libraries: $ldd_output"; fi
phase "installing the .deb with apt (Depends resolved in the chroot)"

# --- Inputs: committed fixtures, and an OVA appliance built from one (exercises FoundationXML/libxml2) ------------
inputs="$root/work/in"
outputs="$root/work/out"
mkdir -p "$inputs" "$outputs"
for fixture in pattern.vmdk pattern-stream.vmdk pattern-zstd.qcow2 pattern-deflate.qcow2 pattern.vhdx; do
    cp "$fixtures/$fixture" "$inputs/"
done
expected_digest() {
    local digest
    digest=$(awk -v name="$1" '$2 == name { print $1 }' "$repo/Fixtures/SHA256SUMS")
    [ -n "$digest" ] || fail "Fixtures/SHA256SUMS has no line for $1"
    echo "$digest"
}
# Prints the field at KEY/KEY/... of the JSON object on stdin.
json_field() { python3 -c 'import json, sys
value = json.load(sys.stdin)
for key in sys.argv[1].split("/"): value = value[key]
print(value)' "$1"; }
pattern_digest=$(expected_digest pattern.vmdk)
virtual_size=$(qemu-img info -f vmdk --output json "$fixtures/pattern.vmdk" | json_field virtual-size)

appliance_name=kdct-deb-test
staging="$work/appliance"
mkdir -p "$staging"
cp "$fixtures/pattern-stream.vmdk" "$staging/disk1.vmdk"
cat > "$staging/$appliance_name.ovf" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf">
  <References><File ovf:href="disk1.vmdk" ovf:id="file1" ovf:size="$(stat -c %s "$staging/disk1.vmdk")"/></References>
  <DiskSection><Info>disks</Info><Disk ovf:capacity="$virtual_size" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/></DiskSection>
  <VirtualSystem ovf:id="$appliance_name">
    <Info>A virtual machine</Info>
    <Name>$appliance_name</Name>
    <OperatingSystemSection ovf:id="101" vmw:osType="debian10_64Guest"><Info>os</Info></OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>hw</Info>
      <System><vssd:InstanceID>0</vssd:InstanceID><vssd:VirtualSystemType>vmx-14</vssd:VirtualSystemType></System>
      <Item><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>2</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>1024</rasd:VirtualQuantity></Item>
      <Item><rasd:Address>0</rasd:Address><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceSubType>lsilogic</rasd:ResourceSubType><rasd:ResourceType>6</rasd:ResourceType></Item>
      <Item><rasd:AddressOnParent>0</rasd:AddressOnParent><rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource><rasd:InstanceID>10</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>
      <Item><rasd:Connection>VM Network</rasd:Connection><rasd:ElementName>Network adapter 1</rasd:ElementName><rasd:InstanceID>20</rasd:InstanceID><rasd:ResourceSubType>VMXNET3</rasd:ResourceSubType><rasd:ResourceType>10</rasd:ResourceType></Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
EOF
(cd "$staging" && for member in "$appliance_name.ovf" disk1.vmdk; do
    echo "SHA256($member)= $(sha256sum < "$member" | cut -d' ' -f1)"
done > "$appliance_name.mf")
tar --format=ustar -cf "$inputs/$appliance_name.ova" -C "$staging" "$appliance_name.ovf" "$appliance_name.mf" disk1.vmdk

# --- Run kdct-native inside the chroot ------------------------------------------------------------------------------
# Runs kdct-native ARGS... in the chroot (working directory /work); stdout goes to out/NAME.stdout.
kdct() {
    local name=$1; shift
    if ! in_chroot sh -c 'cd /work && exec kdct-native "$@"' kdct-native "$@" \
            > "$outputs/$name.stdout" 2> "$outputs/$name.stderr"; then
        cat "$outputs/$name.stderr" >&2
        fail "kdct-native $* failed in the chroot"
    fi
}
expect_in() { grep -qE "$2" "$outputs/$1.stdout" || fail "$1: no '$2' in: $(cat "$outputs/$1.stdout")"; }

kdct help --help
for command in info convert map compare check checksum formats export; do expect_in help "^ +$command( |$)"; done
kdct formats formats
expect_in formats '^vmdk +read'
kdct info-human info in/pattern.vmdk
expect_in info-human '^file format: vmdk$'
kdct info-json info --output json in/pattern.vmdk
kdct info-vhdx info --output json in/pattern.vhdx
kdct convert-qcow2 convert -O qcow2 in/pattern.vmdk out/pattern.qcow2
kdct convert-raw convert -O raw in/pattern.vmdk out/pattern.raw
kdct convert-deflate convert -c -O qcow2 in/pattern.vmdk out/pattern-deflate.qcow2
kdct convert-zstd convert -c -O qcow2 -o compression_type=zstd in/pattern.vmdk out/pattern-zstd.qcow2
kdct convert-vhdx convert -O qcow2 in/pattern.vhdx out/pattern-vhdx.qcow2
for input in pattern.vmdk pattern-zstd.qcow2 pattern-deflate.qcow2 pattern.vhdx; do
    kdct "checksum-$input" checksum "in/$input"
done
kdct checksum-output checksum out/pattern-zstd.qcow2
kdct check-output check out/pattern.qcow2
kdct info-ova info "in/$appliance_name.ova"
expect_in info-ova "$appliance_name"
kdct convert-ova convert -O qcow2 "in/$appliance_name.ova" out/appliance
# A failure is reported, not crashed: exit status 1 and a message naming MUST_NAME on stderr.
expect_failure() {
    local name=$1 must_name=$2 status=0; shift 2
    in_chroot sh -c 'cd /work && exec kdct-native "$@"' kdct-native "$@" > /dev/null 2> "$outputs/$name.stderr" ||
        status=$?
    [ "$status" -eq 1 ] || fail "kdct-native $*: exit status $status, expected 1 ($(cat "$outputs/$name.stderr"))"
    grep -qF "$must_name" "$outputs/$name.stderr" ||
        fail "kdct-native $*: the error does not name $must_name: $(cat "$outputs/$name.stderr")"
}
head -c 64 "$fixtures/pattern-zstd.qcow2" > "$inputs/truncated.qcow2"
expect_failure truncated truncated.qcow2 info in/truncated.qcow2
expect_failure export-refused 127.0.0.1 export -P 1 --known-hosts /dev/null in/pattern.vmdk root@127.0.0.1:/tmp/x
phase "running info, convert and checksum in the chroot"

# --- Check the results OUTSIDE the chroot with qemu-img and SHA256SUMS --------------------------------------------
[ "$(json_field format < "$outputs/info-json.stdout")" = vmdk ] || fail "info --output json in the chroot: format is not vmdk"
[ "$(json_field virtual-size < "$outputs/info-json.stdout")" = "$virtual_size" ] ||
    fail "info --output json in the chroot: virtual-size is not qemu-img's $virtual_size"
vhdx_size=$(json_field virtual-size < "$outputs/info-vhdx.stdout")
qemu_vhdx_size=$(qemu-img info -f vhdx --output json "$inputs/pattern.vhdx" | json_field virtual-size)
[ "$vhdx_size" = "$qemu_vhdx_size" ] || fail "info says the VHDX has $vhdx_size bytes, qemu-img says $qemu_vhdx_size"

for input in pattern.vmdk pattern-zstd.qcow2 pattern-deflate.qcow2 pattern.vhdx; do
    got=$(cut -d' ' -f1 "$outputs/checksum-$input.stdout")
    want=$(expected_digest "$input")
    [ "$got" = "$want" ] || fail "checksum of $input in the chroot: $got, SHA256SUMS says $want"
done
got=$(cut -d' ' -f1 "$outputs/checksum-output.stdout")
[ "$got" = "$pattern_digest" ] || fail "checksum of the zstd output in the chroot: $got, expected $pattern_digest"
got=$(sha256sum < "$outputs/pattern.raw" | cut -d' ' -f1)
[ "$got" = "$pattern_digest" ] || fail "SHA-256 of the raw output: $got, expected $pattern_digest"

ova_disk="$outputs/appliance/$appliance_name-disk1.qcow2"
ova_domain="$outputs/appliance/$appliance_name.xml"
[ -f "$ova_disk" ] || fail "the OVA conversion wrote no $ova_disk: $(ls -la "$outputs/appliance")"
[ -f "$ova_domain" ] || fail "the OVA conversion wrote no $ova_domain"
for qcow2 in "$outputs/pattern.qcow2" "$outputs/pattern-deflate.qcow2" "$outputs/pattern-zstd.qcow2" \
             "$outputs/pattern-vhdx.qcow2" "$ova_disk"; do
    qemu-img check -q -f qcow2 "$qcow2" || fail "qemu-img check $qcow2 failed"
done
qemu-img compare -q -f vmdk -F qcow2 "$fixtures/pattern.vmdk" "$outputs/pattern.qcow2" || fail "qcow2 output differs"
qemu-img compare -q -f vmdk -F raw "$fixtures/pattern.vmdk" "$outputs/pattern.raw" || fail "raw output differs"
qemu-img compare -q -f vmdk -F qcow2 "$fixtures/pattern.vmdk" "$outputs/pattern-deflate.qcow2" ||
    fail "deflate-compressed output differs"
qemu-img compare -q -f vmdk -F qcow2 "$fixtures/pattern.vmdk" "$outputs/pattern-zstd.qcow2" ||
    fail "zstd-compressed output differs"
qemu-img compare -q -f vhdx -F qcow2 "$fixtures/pattern.vhdx" "$outputs/pattern-vhdx.qcow2" || fail "vhdx output differs"
qemu-img compare -q -f vmdk -F qcow2 "$fixtures/pattern-stream.vmdk" "$ova_disk" || fail "the OVA's disk differs"
[ "$(qemu-img info --output json "$outputs/pattern-zstd.qcow2" | json_field format-specific/data/compression-type)" = zstd ] ||
    fail "the -o compression_type=zstd output is not zstd-compressed"
plain_size=$(stat -c %s "$outputs/pattern.qcow2")
for compressed in pattern-deflate.qcow2 pattern-zstd.qcow2; do
    [ "$(stat -c %s "$outputs/$compressed")" -lt "$plain_size" ] ||
        fail "$compressed is not smaller than the uncompressed output ($plain_size bytes): -c did not compress"
done
virt-xml-validate "$ova_domain" domain >/dev/null || fail "the OVA's domain XML is not valid for libvirt"
phase "checking the outputs with qemu-img outside the chroot"

note "PASS: $deb ($deb_package $deb_version) installs into a minimal $suite without Swift or qemu, and its info," \
     "convert and checksum results match qemu-img and SHA256SUMS (total $((SECONDS - total_start)) s)"
