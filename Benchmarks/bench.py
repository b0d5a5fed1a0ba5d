#!/usr/bin/env python3
"""Benchmark harness: kdct-native against qemu-img convert on the same workload, in the same run.

Workload: an 8 GiB virtual ext4 image holding about 1.6 GB of real files hard-linked from /usr (mkfs.ext4 -d),
converted once with qemu-img into every input format. Each case runs the two tools alternately, `sync` before every
timed run, at least 3 times each, and reports medians, the ratio kdct/qemu, output sizes and peak RSS (wait4).

usage: Benchmarks/bench.py [--runs N] [--cases a,b,...] [--kdct PATH] [--out Benchmarks/RESULTS.md]
                          [--cold] [--slow-source MBPS [--source-in-ram]] [--variants 'name:args;name:args']
                          [--floor]

--cold evicts the input (and its chain) from the page cache before every timed run of every tool: as root
`sync; echo 3 > /proc/sys/vm/drop_caches`, otherwise posix_fadvise(DONTNEED) on each input file. --slow-source
puts the input on a read-only loop device (direct I/O, so the loop's own reads bypass the page cache) whose reads
are throttled to MBPS MB/s for the tools (a cgroup: v2 `io.max rbps`, or v1 `blkio.throttle.read_bps_device`);
implies --cold; MBPS 0 sets no limit. --source-in-ram backs that loop device with a copy of the input in /dev/shm,
so the input's reads never touch the disk the output is written to: a migration reading from another device (an NFS
share, a USB disk, a datastore's LUN) onto a local one. --variants adds kdct-native runs with extra arguments (e.g. 'ra0:--read-ahead 0'), alternated with
the others; leading NAME=VALUE words set environment variables. --floor adds two timed steps on the same data: `cat` of the input to /dev/null and a sequential write
of as many bytes as kdct-native's output allocates (dd, fsync), the hardware floor of a cold conversion.
"""
import argparse, os, platform, shutil, statistics, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORK = os.path.join(HERE, "work")
DATA_BYTES = 1_600_000_000
GIB = 1 << 30

# name: (input file, qemu input format, kdct extra args, qemu extra args, output format)
CASES = {
    "raw-qcow2":        ("workload.raw", "raw", [], [], "qcow2"),
    "qcow2-qcow2":      ("workload.qcow2", "qcow2", [], [], "qcow2"),
    "qcow2-qcow2-c":    ("workload.qcow2", "qcow2", ["-c"], ["-c"], "qcow2"),
    "qcow2-qcow2-zstd": ("workload.qcow2", "qcow2", ["-c", "-o", "compression_type=zstd"], ["-c", "-o", "compression_type=zstd"], "qcow2"),
    "qcow2-raw":        ("workload.qcow2", "qcow2", [], [], "raw"),
    "vmdk-qcow2":       ("workload.vmdk", "vmdk", [], [], "qcow2"),
    "vmdk-stream-qcow2": ("workload-stream.vmdk", "vmdk", [], [], "qcow2"),
    "vhd-qcow2":        ("workload.vhd", "vpc", [], [], "qcow2"),
    "vhdx-qcow2":       ("workload.vhdx", "vhdx", [], [], "qcow2"),
    "vdi-qcow2":        ("workload.vdi", "vdi", [], [], "qcow2"),
    "qcow-qcow2":       ("workload.qcow", "qcow", [], [], "qcow2"),
    "qed-qcow2":        ("workload.qed", "qed", [], [], "qcow2"),
    "empty2t-qcow2":    ("empty-2t.qcow2", "qcow2", [], [], "qcow2"),
    # Every input format to raw too (the cold-cache table: `--cold --cases` with these and the -qcow2 cases).
    "vmdk-raw":         ("workload.vmdk", "vmdk", [], [], "raw"),
    "vmdk-stream-raw":  ("workload-stream.vmdk", "vmdk", [], [], "raw"),
    "vhd-raw":          ("workload.vhd", "vpc", [], [], "raw"),
    "vhdx-raw":         ("workload.vhdx", "vhdx", [], [], "raw"),
    "vdi-raw":          ("workload.vdi", "vdi", [], [], "raw"),
    "qcow-raw":         ("workload.qcow", "qcow", [], [], "raw"),
    "qed-raw":          ("workload.qed", "qed", [], [], "raw"),
    # Copy offloading (-C, both tools): the data goes through copy_file_range instead of read+write. Each has a
    # base case without -C above (raw-raw below), so the table's copy offloading section shows the time saved.
    "raw-raw":          ("workload.raw", "raw", [], [], "raw"),
    "raw-raw-C":        ("workload.raw", "raw", ["-C"], ["-C"], "raw"),
    "raw-qcow2-C":      ("workload.raw", "raw", ["-C"], ["-C"], "qcow2"),
    "qcow2-raw-C":      ("workload.qcow2", "qcow2", ["-C"], ["-C"], "raw"),
}
# Not run unless named with --cases (the raw-output cases of the cold table, the copy offloading ones).
EXTRA_CASES = {"vmdk-raw", "vmdk-stream-raw", "vhd-raw", "vhdx-raw", "vdi-raw", "qcow-raw", "qed-raw",
               "raw-raw", "raw-raw-C", "raw-qcow2-C", "qcow2-raw-C"}
INPUTS = {
    "workload.qcow2": ["-O", "qcow2"],
    "workload.vmdk": ["-O", "vmdk", "-o", "subformat=monolithicSparse"],
    "workload-stream.vmdk": ["-O", "vmdk", "-o", "subformat=streamOptimized"],
    "workload.vhd": ["-O", "vpc", "-o", "subformat=dynamic"],
    "workload.vhdx": ["-O", "vhdx"],
    "workload.vdi": ["-O", "vdi"],
    "workload.qcow": ["-O", "qcow"],
    "workload.qed": ["-O", "qed"],
}


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def build_workload():
    os.makedirs(WORK, exist_ok=True)
    raw = os.path.join(WORK, "workload.raw")
    if not os.path.exists(raw):
        staging = os.path.join(WORK, "staging")
        shutil.rmtree(staging, ignore_errors=True)
        total = 0
        for dirpath, dirnames, filenames in os.walk("/usr"):
            dirnames.sort()
            for name in sorted(filenames):
                src = os.path.join(dirpath, name)
                if os.path.islink(src) or not os.path.isfile(src):
                    continue
                dst = os.path.join(staging, os.path.relpath(src, "/"))
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                try:
                    os.link(src, dst)
                except OSError:
                    shutil.copy2(src, dst)
                total += os.path.getsize(src)
                if total >= DATA_BYTES:
                    break
            if total >= DATA_BYTES:
                break
        print(f"workload: {total / 1e9:.2f} GB of files from /usr", flush=True)
        run(["mkfs.ext4", "-q", "-F", "-d", staging, "-L", "kdct-bench", raw, "8G"])
        shutil.rmtree(staging, ignore_errors=True)
    for name, args in INPUTS.items():
        path = os.path.join(WORK, name)
        if not os.path.exists(path):
            print(f"making {name}", flush=True)
            run(["qemu-img", "convert", "-f", "raw"] + args + [raw, path + ".part"])
            os.rename(path + ".part", path)
    empty = os.path.join(WORK, "empty-2t.qcow2")
    if not os.path.exists(empty):
        run(["qemu-img", "create", "-q", "-f", "qcow2", empty, "2T"])


def warm(path):
    """Reads the input once so every timed run finds it in the page cache (otherwise whichever tool runs first
    pays the disk reads)."""
    with open(path, "rb", buffering=0) as f:
        while f.read(8 << 20):
            pass


def chain_files(path):
    """The input and every file it references (backing chain, VMDK extents), as qemu-img info reports them."""
    files = {os.path.realpath(path)}
    try:
        import json
        info = json.loads(subprocess.run(["qemu-img", "info", "--backing-chain", "--output=json", path],
                                         capture_output=True, text=True, check=True).stdout)
        for image in info if isinstance(info, list) else [info]:
            files.add(os.path.realpath(image["filename"]))
            for extent in image.get("format-specific", {}).get("data", {}).get("extents", []):
                files.add(os.path.realpath(extent["filename"]))
    except (subprocess.CalledProcessError, KeyError, ValueError):
        pass
    return sorted(f for f in files if os.path.exists(f))


def evict(paths):
    """Drops the inputs from the page cache: all caches as root, else posix_fadvise(DONTNEED) on each file."""
    run(["sync"])
    if os.geteuid() == 0:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


class SlowSource:
    """A read-only loop device over `path` (direct I/O) with reads throttled to `mbps` MB/s for the processes
    put in its cgroup (v2 io.max, else v1 blkio)."""

    def __init__(self, path, mbps, in_ram=False):
        # In RAM: a copy in /dev/shm backs the loop device, so reading it never touches the output's disk.
        self.copy = None
        if in_ram:
            self.copy = os.path.join("/dev/shm", "kdct-bench-" + os.path.basename(path))
            run(["cp", "--sparse=always", path, self.copy])
            path = self.copy
        self.loop = subprocess.run(["losetup", "--find", "--show", "--read-only", "--direct-io=on", path],
                                   capture_output=True, text=True, check=True).stdout.strip()
        st = os.stat(self.loop)
        device = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
        rate = int(mbps * 1_000_000)
        backing = " over a copy in /dev/shm (RAM)" if in_ram else ""
        if mbps <= 0:
            self.cgroup = self.tasks = None
            self.description = f"{self.loop} (losetup --read-only --direct-io=on){backing}, reads not limited"
            return
        if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
            self.cgroup = "/sys/fs/cgroup/kdct-bench-slow"
            os.makedirs(self.cgroup, exist_ok=True)
            with open(os.path.join(self.cgroup, "io.max"), "w") as f:
                f.write(f"{device} rbps={rate}\n")
            self.tasks = os.path.join(self.cgroup, "cgroup.procs")
        else:
            self.cgroup = "/sys/fs/cgroup/blkio/kdct-bench-slow"
            os.makedirs(self.cgroup, exist_ok=True)
            with open(os.path.join(self.cgroup, "blkio.throttle.read_bps_device"), "w") as f:
                f.write(f"{device} {rate}\n")
            self.tasks = os.path.join(self.cgroup, "tasks")
        self.description = (f"{self.loop} (losetup --read-only --direct-io=on){backing}, reads limited to {mbps:g} MB/s by "
                            f"{'io.max rbps' if self.tasks.endswith('procs') else 'blkio.throttle.read_bps_device'} "
                            f"in cgroup {self.cgroup}")

    def enter(self):
        """Runs in the child before exec: joins the throttled cgroup."""
        if self.tasks is None:
            return
        with open(self.tasks, "w") as f:
            f.write(f"{os.getpid()}\n")

    def close(self):
        subprocess.run(["losetup", "-d", self.loop])
        if self.copy:
            os.unlink(self.copy)
        try:
            if self.cgroup:
                os.rmdir(self.cgroup)
        except OSError:
            pass


def timed(cmd, fsync_output=None, before=None, preexec=None):
    """Runs cmd after sync (and `before`, e.g. evicting the input); returns (seconds, peak RSS in KiB, CPU seconds).
    With `fsync_output`, the time also covers an fsync of that file after the command exits (the durability
    kdct-native gives before its rename). `preexec` runs in the child (joining a cgroup)."""
    run(["sync"])
    if before:
        before()
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=preexec)
    _, status, usage = os.wait4(proc.pid, 0)
    if fsync_output and os.waitstatus_to_exitcode(status) == 0:
        fd = os.open(fsync_output, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    elapsed = time.monotonic() - start
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{err}")
    return elapsed, usage.ru_maxrss, usage.ru_utime + usage.ru_stime


def machine():
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    qemu = subprocess.run(["qemu-img", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    return f"{cpu}, {os.cpu_count()} CPUs, {mem:.0f} GiB RAM, Linux {platform.release()}; {qemu}"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cases", default=",".join(c for c in CASES if c not in EXTRA_CASES))
    parser.add_argument("--kdct", default=os.path.join(ROOT, ".build/release/kdct-native"))
    parser.add_argument("--out", default=None, help="default: RESULTS.md, or RESULTS-cold.md / RESULTS-slow.md")
    parser.add_argument("--build-only", action="store_true", help="only make the workload files")
    parser.add_argument("--cold", action="store_true", help="evict the input before every timed run")
    parser.add_argument("--slow-source", type=float, metavar="MBPS", help="input on a loop device throttled to MBPS MB/s")
    parser.add_argument("--source-in-ram", action="store_true", help="with --slow-source: the loop device over a copy in /dev/shm")
    parser.add_argument("--variants", default="", help="extra kdct-native runs: 'name:args;name:args'")
    parser.add_argument("--floor", action="store_true", help="also time cat of the input and a sequential write")
    args = parser.parse_args()
    if args.source_in_ram and args.slow_source is None:
        parser.error("--source-in-ram needs --slow-source MBPS (0: no limit)")
    if args.slow_source is not None:
        args.cold = True
    mode = "slow" if args.slow_source is not None else "cold" if args.cold else "warm"
    out_path = args.out or os.path.join(HERE, {"warm": "RESULTS.md", "cold": "RESULTS-cold.md", "slow": "RESULTS-slow.md"}[mode])
    variants = [(v.split(":", 1)[0], v.split(":", 1)[1].split()) for v in args.variants.split(";") if v.strip()]
    build_workload()
    if args.build_only:
        return
    rows = []
    slow_description = None
    for case in args.cases.split(","):
        run_one_case(case, args, variants, rows)
        slow_description = rows[-1].get("slow") if rows else slow_description
    write_results(out_path, rows, args.runs, mode, variants, slow_description)


def run_one_case(case, args, variants, rows):
    """Times one case (on its slow source when asked) and appends its row."""
    src, qfmt, kextra, qextra, ofmt = CASES[case]
    src = os.path.join(WORK, src)
    if not os.path.exists(src):
        print(f"skip {case}: {src} missing", flush=True)
        return
    slow = SlowSource(src, args.slow_source, args.source_in_ram) if args.slow_source is not None else None
    try:
        rows.append(run_case(case, src, qfmt, kextra, qextra, ofmt, args, variants, slow))
        if slow:
            rows[-1]["slow"] = slow.description
    finally:
        if slow:
            slow.close()


def run_case(case, src, qfmt, kextra, qextra, ofmt, args, variants, slow):
    """Times every tool on one case, alternating, and returns the table row."""
    files = chain_files(src)
    read_path = slow.loop if slow else src
    kdct_tools = ["kdct"] + [f"kdct-{name}" for name, _ in variants]
    outs = {t: os.path.join(WORK, f"out-{t}.{ofmt}") for t in kdct_tools + ["qemu", "qemu-fsync"]}
    # qemu-img convert leaves its output's writeback to the kernel after it exits (no fsync at the end, in
    # any cache mode, as strace shows); kdct-native fsyncs before renaming into place. "qemu-fsync" times
    # qemu-img followed by an fsync of its output, i.e. until the data is on disk too.
    cmds = {"kdct": [args.kdct, "convert", "--force", "-O", ofmt] + kextra + [read_path, outs["kdct"]]}
    for name, extra in variants:
        # Leading NAME=VALUE words are environment variables (run through env(1)); the rest are arguments.
        env = [word for word in extra if "=" in word and not word.startswith("-")]
        rest = [word for word in extra if word not in env]
        cmds[f"kdct-{name}"] = (["env"] + env if env else []) + [args.kdct, "convert", "--force", "-O", ofmt] + kextra + rest + [read_path, outs[f"kdct-{name}"]]
    cmds["qemu"] = ["qemu-img", "convert", "-f", qfmt, "-O", ofmt] + qextra + [read_path, outs["qemu"]]
    cmds["qemu-fsync"] = ["qemu-img", "convert", "-f", qfmt, "-O", ofmt] + qextra + [read_path, outs["qemu-fsync"]]
    tools = kdct_tools + (["qemu"] if "-c" in kextra else ["qemu", "qemu-fsync"])
    if args.floor:
        # The floor on the same data: reading the input (cold) and writing as many bytes as the output holds.
        blocks = max(1, os.stat(src).st_blocks * 512 // (4 << 20))
        outs["write"] = os.path.join(WORK, "out-floor.bin")
        cmds["cat"] = ["cat", read_path]
        cmds["write"] = ["dd", "if=/dev/zero", f"of={outs['write']}", "bs=4M", f"count={blocks}", "conv=fsync", "status=none"]
        tools += ["cat", "write"]
    times = {t: [] for t in tools}
    cpu = {t: [] for t in tools}
    rss = {t: 0 for t in tools}
    if not args.cold:
        warm(src)
    before = (lambda: evict(files)) if args.cold else None
    for i in range(args.runs):
        order = tools if i % 2 == 0 else list(reversed(tools))
        for tool in order:
            if tool in outs and os.path.exists(outs[tool]):
                os.unlink(outs[tool])
            seconds, peak, cpu_seconds = timed(cmds[tool], outs[tool] if tool == "qemu-fsync" else None, before,
                                               slow.enter if slow and tool != "write" else None)
            times[tool].append(seconds)
            cpu[tool].append(cpu_seconds)
            rss[tool] = max(rss[tool], peak)
    converters = [t for t in tools if t not in ("cat", "write")]
    sizes = {t: os.stat(outs[t]).st_blocks * 512 for t in converters}
    same = all(subprocess.run(["qemu-img", "compare", "-f", ofmt, "-F", ofmt, outs[t], outs["qemu"]],
                              capture_output=True).returncode == 0 for t in kdct_tools)
    med = {t: statistics.median(times[t]) for t in times}
    row = {
        "case": case, "med": med, "cpu": {t: statistics.median(cpu[t]) for t in tools},
        "kdct": med["kdct"], "qemu": med["qemu"], "ratio": med["kdct"] / med["qemu"],
        "qemu_wb": med.get("qemu-fsync"), "ratio_wb": med["kdct"] / med["qemu-fsync"] if "qemu-fsync" in med else None,
        "kdct_cpu": statistics.median(cpu["kdct"]), "qemu_cpu": statistics.median(cpu["qemu"]),
        "runs": times, "kdct_rss": rss["kdct"], "qemu_rss": rss["qemu"], "rss": rss,
        "kdct_size": sizes["kdct"], "qemu_size": sizes["qemu"], "identical": same,
        "cmds": {t: " ".join(cmds[t]).replace(ROOT + "/", "") for t in tools},
    }
    print(f"{case}: " + " ".join(f"{t} {med[t]:.2f}s/{row['cpu'][t]:.1f}cpu" for t in tools) +
          f" rss {rss['kdct'] // 1024}/{rss['qemu'] // 1024} MiB identical={same}", flush=True)
    for tool in tools:
        if tool in outs and os.path.exists(outs[tool]):
            os.unlink(outs[tool])
    return row


def write_results(path, rows, runs, mode="warm", variants=(), slow_description=None):
    if mode != "warm":
        return write_cold_results(path, rows, runs, mode, variants, slow_description)
    lines = [
        "# Benchmark results", "",
        f"Recorded {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `Benchmarks/bench.py --runs {runs}`.", "",
        f"Machine: {machine()}. The machine is shared and noisy: the two tools run alternately, `sync` before every",
        "timed run, and the table gives medians. Inputs are in the page cache after the first run (both tools alike);",
        "kdct-native's time includes its final fsync (outputs are flushed before they are renamed into place);",
        "qemu-img convert never fsyncs its output (its writeback happens after it exits, uncounted), so for the",
        "uncompressed cases a `qemu-img + fsync` column times qemu-img followed by an fsync of its output: the same",
        "durability kdct-native provides. CPU is user+sys seconds of the tool itself (median).", "",
        "Workload: an 8 GiB virtual ext4 image with about 1.6 GB of files from /usr (`mkfs.ext4 -d`), converted by",
        "qemu-img into each input format.", "",
        "| case | kdct-native (s) | qemu-img (s) | ratio | qemu-img + fsync (s) | ratio | CPU kdct / qemu (s) | peak RSS kdct / qemu (MiB) | output kdct / qemu (MB allocated) | outputs identical |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        wb = f"{r['qemu_wb']:.2f} | {r['ratio_wb']:.2f}" if r["qemu_wb"] is not None else "- | -"
        lines.append(f"| {r['case']} | {r['kdct']:.2f} | {r['qemu']:.2f} | {r['ratio']:.2f} | {wb} | "
                     f"{r['kdct_cpu']:.1f} / {r['qemu_cpu']:.1f} | "
                     f"{r['kdct_rss'] // 1024} / {r['qemu_rss'] // 1024} | {r['kdct_size'] / 1e6:.2f} / {r['qemu_size'] / 1e6:.2f} | "
                     f"{'yes' if r['identical'] else 'NO'} |")
    by_case = {r["case"]: r for r in rows}
    offloaded = [(r, by_case.get(r["case"][:-2])) for r in rows if r["case"].endswith("-C")]
    if offloaded:
        lines += ["", "## Copy offloading (-C)", "",
                  "kdct-native with and without `-C` on the same input and output (medians); the data the source stores",
                  "uncompressed is copied by `copy_file_range` (on this machine's ext4 an in-kernel copy, on btrfs/XFS a",
                  "reflink) instead of being read into memory, zero-detected and written.", "",
                  "| case | without -C (s) | with -C (s) | saved (s) | qemu-img -C (s) |", "| --- | --- | --- | --- | --- |"]
        for r, base in offloaded:
            without = f"{base['kdct']:.2f}" if base else "-"
            saved = f"{base['kdct'] - r['kdct']:.2f}" if base else "-"
            lines.append(f"| {r['case']} | {without} | {r['kdct']:.2f} | {saved} | {r['qemu']:.2f} |")
    lines += runs_and_commands(rows)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {path}")


def runs_and_commands(rows):
    lines = ["", "## Runs and commands", ""]
    for r in rows:
        lines.append(f"- **{r['case']}**: " + "; ".join(f"{t} {', '.join(f'{x:.2f}' for x in r['runs'][t])} s" for t in r["runs"]))
        for command in r["cmds"].values():
            lines.append(f"  - `{command}`")
    return lines


def write_cold_results(path, rows, runs, mode, variants, slow_description):
    """The cold-cache (or slow-source) table: every tool's median wall and CPU seconds, kdct-native against
    qemu-img + fsync (the durable baseline), and the floor when measured."""
    names = ["kdct"] + [f"kdct-{name}" for name, _ in variants]
    has_floor = any("cat" in r["med"] for r in rows)
    title = "Cold cache" if mode == "cold" else "Slow source"
    lines = [f"# Benchmark results: {title.lower()}", "",
             f"Recorded {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `Benchmarks/bench.py --runs {runs} "
             f"{'--cold' if mode == 'cold' else '--slow-source ...'}`.", "",
             f"Machine: {machine()}.", "",
             "Before every timed run of every tool: `sync`, then the input and its chain evicted "
             "(`echo 3 > /proc/sys/vm/drop_caches` as root, else posix_fadvise DONTNEED). Tools alternate; medians.",
             "qemu-img + fsync is the durable baseline (kdct-native fsyncs before its rename)."]
    if slow_description:
        lines += ["", f"Slow source: the input on {slow_description}."]
    if variants:
        lines += ["", "Variants: " + "; ".join(f"`kdct-{name}` = `{' '.join(extra)}`" for name, extra in variants) + "."]
    header = ["case"] + [f"{n} (s)" for n in names] + ["qemu-img (s)", "qemu-img + fsync (s)"] + \
             [f"{n} / (qemu+fsync)" for n in names] + ["CPU " + " / ".join(names + ["qemu"]) + " (s)",
                                                        "peak RSS kdct / qemu (MiB)", "identical"]
    if has_floor:
        header += ["floor: cat input (s)", "floor: write + fsync (s)"]
    lines += ["", "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for r in rows:
        med, cpu = r["med"], r["cpu"]
        wb = med.get("qemu-fsync")
        cells = [r["case"]] + [f"{med[n]:.2f}" for n in names] + [f"{med['qemu']:.2f}", f"{wb:.2f}" if wb else "-"]
        cells += [f"{med[n] / wb:.2f}" if wb else "-" for n in names]
        cells += [" / ".join(f"{cpu[n]:.1f}" for n in names + ["qemu"]), f"{r['kdct_rss'] // 1024} / {r['qemu_rss'] // 1024}",
                  "yes" if r["identical"] else "NO"]
        if has_floor:
            cells += [f"{med['cat']:.2f}" if "cat" in med else "-", f"{med['write']:.2f}" if "write" in med else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += runs_and_commands(rows)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
