#!/usr/bin/env bash
# Export throughput on loopback: `kdct-native export` against OpenSSH's `sftp` put of the same file, to the same
# private sshd, alternating the tools, `sync` before each timed run, median of RUNS runs each.
# Writes Benchmarks/RESULTS-export.md. Needs root (it starts sshd and logs in as root with a generated key).
#
#   Benchmarks/export-bench.sh [SIZE_MIB=1024] [RUNS=5] [BINARY=.build/release/kdct-native]
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${1:-1024}
RUNS=${2:-5}
BIN=${3:-.build/release/kdct-native}
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

now() { date +%s.%N; }
run_kdct() { # $1: extra flags
    rm -f "$WORK/remote/k.raw"
    sync
    local t0; t0=$(now)
    SSH_AUTH_SOCK= "$BIN" export -P "$PORT" -i "$WORK/client_key" --known-hosts "$WORK/known_hosts" $1 \
        "$SRC" "root@127.0.0.1:$WORK/remote/k.raw" > /dev/null
    elapsed "$t0"
}
run_sftp() { # $1: put flags (-f: fsync@openssh.com after the transfer, as kdct-native always does)
    rm -f "$WORK/remote/s.raw"
    sync
    local t0; t0=$(now)
    SSH_AUTH_SOCK= sftp -q -P "$PORT" "${SSH_OPTS[@]}" -b - root@127.0.0.1 > /dev/null <<< "put $1 $SRC $WORK/remote/s.raw"
    elapsed "$t0"
}
elapsed() { awk -v a="$(now)" -v b="$1" 'BEGIN { printf "%.3f\n", a - b }'; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

declare -a T_SFTP T_SFTP_F T_KDCT T_KDCT_NV
for i in $(seq "$RUNS"); do
    T_SFTP+=("$(run_sftp "")")
    T_KDCT_NV+=("$(run_kdct --no-verify)")
    T_SFTP_F+=("$(run_sftp -f)")
    T_KDCT+=("$(run_kdct "")")
    echo "run $i: sftp put ${T_SFTP[-1]}s, kdct --no-verify ${T_KDCT_NV[-1]}s, sftp put -f ${T_SFTP_F[-1]}s, kdct ${T_KDCT[-1]}s" >&2
done
cmp "$SRC" "$WORK/remote/k.raw" && cmp "$SRC" "$WORK/remote/s.raw"

M_SFTP=$(printf '%s\n' "${T_SFTP[@]}" | median)
M_SFTP_F=$(printf '%s\n' "${T_SFTP_F[@]}" | median)
M_KDCT_NV=$(printf '%s\n' "${T_KDCT_NV[@]}" | median)
M_KDCT=$(printf '%s\n' "${T_KDCT[@]}" | median)
rate() { awk -v s="$SIZE_MIB" -v t="$1" 'BEGIN { printf "%.1f", s / t }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
{
    echo "# Export throughput (loopback)"
    echo
    echo "$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), load average before: $LOAD."
    echo "$SIZE_MIB MiB of random data, $RUNS runs each, tools alternated, \`sync\` before each run; median wall time."
    echo "OpenSSH $(ssh -V 2>&1 | cut -d, -f1), libssh2 $(dpkg-query -W -f='${Version}' libssh2-1 2>/dev/null || echo '?')."
    echo
    echo "| tool | median s | MiB/s | throughput vs \`put\` | vs \`put -f\` |"
    echo "| --- | --- | --- | --- | --- |"
    echo "| OpenSSH \`sftp\` put | $M_SFTP | $(rate "$M_SFTP") | 1.00x | |"
    echo "| OpenSSH \`sftp\` put -f (fsync) | $M_SFTP_F | $(rate "$M_SFTP_F") | $(ratio "$M_SFTP" "$M_SFTP_F")x | 1.00x |"
    echo "| \`kdct-native export --no-verify\` (fsync) | $M_KDCT_NV | $(rate "$M_KDCT_NV") | $(ratio "$M_SFTP" "$M_KDCT_NV")x | $(ratio "$M_SFTP_F" "$M_KDCT_NV")x |"
    echo "| \`kdct-native export\` (fsync, SHA-256 on the host) | $M_KDCT | $(rate "$M_KDCT") | $(ratio "$M_SFTP" "$M_KDCT")x | $(ratio "$M_SFTP_F" "$M_KDCT")x |"
    echo
    echo "Raw timings (s): put ${T_SFTP[*]}; put -f ${T_SFTP_F[*]}; kdct --no-verify ${T_KDCT_NV[*]}; kdct ${T_KDCT[*]}."
} > Benchmarks/RESULTS-export.md
cat Benchmarks/RESULTS-export.md
