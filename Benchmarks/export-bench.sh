#!/usr/bin/env bash
# Export throughput on loopback: `kdct-native export` against OpenSSH's `sftp -b` put of the same file to the same
# private sshd: with sftp's default cipher and MAC, and forced to the ones libssh2 negotiates (aes128-ctr,
# hmac-sha2-256). The export flushes the file to the host's disk before renaming it (fsync@openssh.com), which a
# plain `put` does not: `put -f` (fsync after the transfer) is the baseline of equal durability, and
# `export -t unsafe` (no flush) is the one to hold against a plain `put`. Every configuration runs RUNS times, the configurations alternating, `sync` before each run;
# the table shows medians of the wall time, the client's CPU seconds (user+sys of the process and its children:
# sftp's ssh) and the server's (sshd and sftp-server: the children the listening sshd reaped).
# Writes Benchmarks/RESULTS-export.md (keeping its "## Analysis" section, written by hand). Needs root (it starts sshd and logs in as root with a generated key).
#
#   Benchmarks/export-bench.sh [SIZE_MIB=1024] [RUNS=5] [BINARY=.build/release/kdct-native] [STREAMS="1 2 3 4"]
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${1:-1024}
RUNS=${2:-5}
BIN=${3:-.build/release/kdct-native}
STREAMS=${4:-"1 2 3 4"}
[ "$(id -u)" -eq 0 ] || { echo "run as root (sshd needs it)" >&2; exit 1; }
if [ ! -x "$BIN" ]; then swift build -c release --product kdct-native; fi

WORK=$(mktemp -d /tmp/kdct-export-bench-XXXXXX)
chmod 755 "$WORK"
SSHD_PID=""
cleanup() { [ -n "$SSHD_PID" ] && kill "$SSHD_PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

mkdir -p /run/sshd "$WORK/remote"
ssh-keygen -q -t ed25519 -N '' -f "$WORK/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$WORK/client_key"
cp "$WORK/client_key.pub" "$WORK/authorized_keys"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$WORK/sshd_config" <<CONF
Port $PORT
ListenAddress 127.0.0.1
HostKey $WORK/host_key
PidFile none
AuthorizedKeysFile $WORK/authorized_keys
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin prohibit-password
Subsystem sftp /usr/lib/openssh/sftp-server
CONF
/usr/sbin/sshd -D -f "$WORK/sshd_config" -E "$WORK/sshd.log" &
SSHD_PID=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
echo "[127.0.0.1]:$PORT $(cat "$WORK/host_key.pub")" > "$WORK/known_hosts"

# Incompressible data (SSH does not compress by default, but the disk cache should not flatter anyone either).
head -c $((SIZE_MIB << 20)) /dev/urandom > "$WORK/disk.raw"
SRC="$WORK/disk.raw"
SSH_OPTS=(-o "UserKnownHostsFile=$WORK/known_hosts" -o StrictHostKeyChecking=yes -o BatchMode=yes -i "$WORK/client_key")
CLK=$(getconf CLK_TCK)

now() { date +%s.%N; }
# CPU seconds the listening sshd has collected from the session processes it reaped.
server_cpu() { awk -v hz="$CLK" '{ printf "%.3f\n", ($16 + $17) / hz }' "/proc/$SSHD_PID/stat"; }
# Runs "$@" (stdin from $STDIN_TEXT), prints "wall client server".
measure() {
    sync
    local s0 t0 t1 s1
    s0=$(server_cpu); t0=$(now)
    /usr/bin/time -f "%U %S" -o "$WORK/time" "$@" <<< "${STDIN_TEXT:-}" > /dev/null
    t1=$(now)
    # The session sshd ends just after the client; wait until the listener has reaped it.
    for _ in $(seq 50); do [ -z "$(pgrep -P "$SSHD_PID")" ] && break; sleep 0.02; done
    s1=$(server_cpu)
    awk -v a="$t0" -v b="$t1" -v s0="$s0" -v s1="$s1" '{ printf "%.3f %.3f %.3f\n", b - a, $1 + $2, s1 - s0 }' "$WORK/time"
}
run_sftp() { # $@: extra ssh options; PUT_FLAGS: flags of put (-f: fsync the file on the host)
    rm -f "$WORK/remote/s.raw"
    STDIN_TEXT="put ${PUT_FLAGS:-} $SRC $WORK/remote/s.raw" measure env SSH_AUTH_SOCK= sftp -q -P "$PORT" "${SSH_OPTS[@]}" "$@" -b - root@127.0.0.1
}
run_kdct() { # $@: extra flags
    rm -f "$WORK/remote/k.raw" "$WORK/remote/.k.raw.kdct-export.part"
    STDIN_TEXT="" measure env SSH_AUTH_SOCK= ${PLAIN_CTR:+KDCT_SSH_PLAIN_CTR=1} "$BIN" export -P "$PORT" -i "$WORK/client_key" --known-hosts "$WORK/known_hosts" "$@" \
        "$SRC" "root@127.0.0.1:$WORK/remote/k.raw"
}

run_kdct_plain() { PLAIN_CTR=1 run_kdct "$@"; }
run_sftp_fsync() { PUT_FLAGS=-f run_sftp "$@"; }

# The configurations, in the order they alternate.
declare -a NAMES CMDS
NAMES+=("OpenSSH \`sftp -b\` put, default cipher and MAC"); CMDS+=("run_sftp")
NAMES+=("OpenSSH \`sftp -b\` put, aes128-ctr + hmac-sha2-256"); CMDS+=("run_sftp -c aes128-ctr -o MACs=hmac-sha2-256")
NAMES+=("OpenSSH \`sftp -b\` put -f (fsync on the host), aes128-ctr + hmac-sha2-256"); CMDS+=("run_sftp_fsync -c aes128-ctr -o MACs=hmac-sha2-256")
for n in $STREAMS; do
    NAMES+=("\`kdct-native export --no-verify --streams $n\`"); CMDS+=("run_kdct --no-verify --streams $n")
done
NAMES+=("\`kdct-native export --no-verify -t unsafe\` (default streams, no fsync on the host)"); CMDS+=("run_kdct --no-verify -t unsafe")
NAMES+=("\`kdct-native export --no-verify --streams 1\`, OpenSSL's per-block AES-CTR (KDCT_SSH_PLAIN_CTR=1)")
CMDS+=("run_kdct_plain --no-verify --streams 1")
NAMES+=("\`kdct-native export\` (default streams, SHA-256 verified on the host)"); CMDS+=("run_kdct")

declare -A WALL CLIENT SERVER
for i in $(seq "$RUNS"); do
    for k in "${!CMDS[@]}"; do
        read -r w c s <<< "$(${CMDS[$k]})"
        WALL[$k]+="$w "; CLIENT[$k]+="$c "; SERVER[$k]+="$s "
        echo "run $i: ${NAMES[$k]}: wall $w s, client $c s, server $s s" >&2
    done
done
cmp "$SRC" "$WORK/remote/k.raw" && cmp "$SRC" "$WORK/remote/s.raw"

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
rate() { awk -v s="$SIZE_MIB" -v t="$1" 'BEGIN { printf "%.1f", s / t }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
SAME=$(echo "${WALL[1]}" | median)
SAME_FSYNC=$(echo "${WALL[2]}" | median)
DEFAULT=$(echo "${WALL[0]}" | median)
{
    echo "# Export throughput (loopback)"
    echo
    echo "$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), load average after: $LOAD."
    echo "$SIZE_MIB MiB of random data, $RUNS runs of each configuration, configurations alternated, \`sync\` before each run;"
    echo "medians. Client CPU: user+sys of the command and its children (sftp's ssh); server CPU: sshd and sftp-server."
    echo "OpenSSH $(ssh -V 2>&1 | cut -d, -f1), libssh2 $(dpkg-query -W -f='${Version}' libssh2-1 2>/dev/null || echo '?'),"
    echo "kdct-native negotiates aes128-ctr + hmac-sha2-256 and, unless \`-t unsafe\`, flushes the file on the host."
    echo "Throughput ratios: the row's MiB/s over the baseline's (above 1 is faster); compare flushing rows with"
    echo "\`put -f\` and \`-t unsafe\` with \`put\`."
    echo
    echo "| tool | wall s | MiB/s | vs sftp put, same cipher | vs sftp put -f, same cipher | vs sftp put, default cipher | client CPU s | server CPU s |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
    for k in "${!CMDS[@]}"; do
        w=$(echo "${WALL[$k]}" | median)
        echo "| ${NAMES[$k]} | $w | $(rate "$w") | $(ratio "$SAME" "$w")x | $(ratio "$SAME_FSYNC" "$w")x | $(ratio "$DEFAULT" "$w")x | $(echo "${CLIENT[$k]}" | median) | $(echo "${SERVER[$k]}" | median) |"
    done
    echo
    echo "Raw wall times (s), in run order:"
    echo
    for k in "${!CMDS[@]}"; do echo "- ${NAMES[$k]}: ${WALL[$k]}"; done
} > "$WORK/table.md"
if [ -f Benchmarks/RESULTS-export.md ]; then
    sed -n '/^## Analysis/,$p' Benchmarks/RESULTS-export.md > "$WORK/analysis.md"
    if [ -s "$WORK/analysis.md" ]; then { echo; cat "$WORK/analysis.md"; } >> "$WORK/table.md"; fi
fi
cp "$WORK/table.md" Benchmarks/RESULTS-export.md
cat Benchmarks/RESULTS-export.md
