#!/bin/bash
# Block-device destinations: two kdct-native builds against qemu-img convert -n (alone, and followed by an fsync of
# the device), alternating, RUNS rounds, each run after `sync` and, cold, `echo 3 > /proc/sys/vm/drop_caches`
# (warm: the input read once first). The destination is a loop device over a 9 GiB file beside the workload (this
# machine has no device-mapper for an LVM volume), written in place as raw. Prints each round's seconds.
#
# usage: Benchmarks/device-bench.sh warm|cold RUNS INPUT FORMAT KDCT_A KDCT_B   (as root)
set -euo pipefail
mode=$1 runs=$2 src=$3 fmt=$4 a=$5 b=$6
backing="$(dirname "$0")/work/device-bench.img"
rm -f "$backing"
truncate -s 9G "$backing"
dev=$(losetup --find --show --direct-io=on "$backing")
trap 'losetup -d "$dev"; rm -f "$backing"' EXIT
prepare() {
    sync
    if [ "$mode" = cold ]; then echo 3 > /proc/sys/vm/drop_caches; else cat "$src" > /dev/null; fi
}
seconds() {
    local start end
    start=$(date +%s.%N)
    "$@" > /dev/null
    end=$(date +%s.%N)
    echo "$end - $start" | bc
}
fsync_device() { python3 -c 'import os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); os.fsync(fd)' "$dev"; }
qemu_fsync() { qemu-img convert -n -f "$fmt" -O raw "$src" "$dev" && fsync_device; }
for i in $(seq "$runs"); do
    prepare; ta=$(seconds "$a" convert -f "$fmt" -O raw "$src" "$dev")
    prepare; tb=$(seconds "$b" convert -f "$fmt" -O raw "$src" "$dev")
    prepare; tq=$(seconds qemu_fsync)
    prepare; tn=$(seconds qemu-img convert -n -f "$fmt" -O raw "$src" "$dev")
    echo "round $i: A $ta s, B $tb s, qemu-img + fsync $tq s, qemu-img $tn s"
done
