#!/usr/bin/env bash
# The disk's floor for a cold conversion, measured in isolation: a cold sequential read of INPUT (`cat` to
# /dev/null), a sequential write of BYTES with fsync (`dd conv=fsync`, to a file beside the benchmark's outputs),
# and both at once, the way a conversion that overlaps reading and writing uses the disk. If the concurrent pair
# takes about read + write, reads and writeback share the disk's bandwidth and overlapping them cannot beat doing
# them one after the other; if it takes about max(read, write), they add up. RUNS rounds, the three steps
# alternating, `sync` and `drop_caches` before each step; prints each run and the medians. Needs root.
#
#   Benchmarks/disk-floor.sh INPUT BYTES [RUNS=5]
set -euo pipefail
INPUT=$1
BYTES=$2
RUNS=${3:-5}
[ "$(id -u)" -eq 0 ] || { echo "run as root (drop_caches needs it)" >&2; exit 1; }
OUT="$(dirname "$(realpath "$INPUT")")/disk-floor.out"
trap 'rm -f "$OUT"' EXIT
BLOCKS=$(( (BYTES + (4 << 20) - 1) / (4 << 20) ))

cold() { sync; echo 3 > /proc/sys/vm/drop_caches; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
read_input() { cat "$INPUT" > /dev/null; }
write_output() { rm -f "$OUT"; dd if=/dev/zero of="$OUT" bs=4M count="$BLOCKS" conv=fsync status=none; }

declare -a READ WRITE BOTH
for i in $(seq "$RUNS"); do
    cold; t0=$(now); read_input; t1=$(now); READ+=("$(elapsed "$t0" "$t1")")
    cold; t0=$(now); write_output; t1=$(now); WRITE+=("$(elapsed "$t0" "$t1")")
    rm -f "$OUT"; cold
    t0=$(now)
    read_input & reader=$!
    write_output & writer=$!
    wait "$reader" "$writer"
    t1=$(now); BOTH+=("$(elapsed "$t0" "$t1")")
    echo "run $i: read ${READ[-1]} s, write+fsync ${WRITE[-1]} s, both at once ${BOTH[-1]} s" >&2
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
r=$(median "${READ[@]}"); w=$(median "${WRITE[@]}"); b=$(median "${BOTH[@]}")
echo "input $(du -h --apparent-size "$INPUT" | cut -f1) ($INPUT), write $BYTES bytes, $RUNS runs, medians:"
echo "| cold read (cat) | write + fsync (dd) | both at once | read + write | max(read, write) |"
echo "| --- | --- | --- | --- | --- |"
echo "| $r s | $w s | $b s | $(awk -v a="$r" -v b="$w" 'BEGIN { printf "%.2f", a + b }') s | $(awk -v a="$r" -v b="$w" 'BEGIN { printf "%.2f", (a > b ? a : b) }') s |"
