#!/usr/bin/env python3
"""Load benchmark of `kdct-native serve` (not a test): the service against the CLI on bench.py's workload.

1. Conversion speed: the same conversion through the service (POST /jobs, its event stream followed to the final
   event, as the web pages do; polling at 50 Hz would add the polls' CPU, about 2 ms each) and with the CLI,
   alternately, `sync` before every run, medians of --runs of wall time and of CPU seconds (the CLI's rusage; the
   server's own CPU over the job, measured from /proc); an I/O-bound case (qcow2 -> qcow2) and a CPU-bound one
   (qcow2 -> qcow2 with zstd compression).
2. Load: for --seconds, 2 conversions run at all times (`--jobs 2`; each restarts when it ends) while 8 client
   threads list a folder, inspect a VMDK, poll a running job and list jobs, as fast as they get answers; latency
   p50/p99 per request kind and overall, and the conversions finished meanwhile.
3. Idle: RSS after start, CPU seconds over 30 s of idling, peak RSS (VmHWM) after the load.

Only the standard library. usage: Benchmarks/serve-load.py [--kdct PATH] [--runs 5] [--seconds 60]
"""
import argparse, http.client, json, os, resource, shutil, statistics, subprocess, sys, tempfile, threading, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import bench  # noqa: E402  (the workload and the machine line)

WORK = bench.WORK
CASES = {
    "qcow2-qcow2": ("workload.qcow2", [], {}),
    "qcow2-qcow2-zstd": ("workload.qcow2", ["-c", "-o", "compression_type=zstd"], {"compress": True, "compression_type": "zstd"}),
}


class Server:
    """`kdct-native serve` on a free loopback port, rooted at the workload folder."""

    def __init__(self, kdct, jobs):
        self.state = tempfile.mkdtemp(prefix="kdct-serve-bench-")
        self.log = open(os.path.join(self.state, "serve.log"), "w")
        self.process = subprocess.Popen(
            [kdct, "serve", "--listen", "127.0.0.1:0", "--root", WORK, "--state", os.path.join(self.state, "state"),
             "--jobs", str(jobs), "--output", "json", "--known-hosts", os.path.join(self.state, "known_hosts")],
            stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = json.loads(self.process.stdout.readline())
        self.port, self.token = line["port"], line["token"]

    def request(self, method, path, body=None):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        headers = {"Authorization": f"Bearer {self.token}"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        connection.request(method, "/api/v1" + path, body=None if body is None else json.dumps(body), headers=headers)
        answer = connection.getresponse()
        data = answer.read()
        connection.close()
        return answer.status, (json.loads(data) if data else None)

    def convert(self, source, destination, options):
        status, job = self.request("POST", "/jobs", {"kind": "convert", "source": source, "destination": destination,
                                                     "output_format": "qcow2", "force": True, **options})
        if status != 202:
            raise SystemExit(f"POST /jobs: {status} {job}")
        return job["id"]

    def wait_for_events(self, job_id):
        """Follows the job's event stream (as the web pages do) to its final event, then returns the job."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        connection.request("GET", f"/api/v1/jobs/{job_id}/events", headers={"Authorization": f"Bearer {self.token}"})
        answer = connection.getresponse()
        if answer.status == 200:
            event = None
            for raw in answer:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    event = line[len("event: "):]
                elif line == "" and event == "state":
                    break
        connection.close()
        return self.wait(job_id)

    def wait(self, job_id, interval=0.02):
        while True:
            status, job = self.request("GET", f"/jobs/{job_id}")
            if job["state"] not in ("queued", "running"):
                if job["state"] != "succeeded":
                    raise SystemExit(f"job failed: {job}")
                return job
            time.sleep(interval)

    def cpu_seconds(self):
        fields = open(f"/proc/{self.process.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def memory(self, key):
        for line in open(f"/proc/{self.process.pid}/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self):
        self.process.terminate()
        self.process.wait(60)
        self.log.close()
        shutil.rmtree(self.state, ignore_errors=True)


def speed(kdct, runs):
    """Medians of the service's and the CLI's wall time for each case, alternating."""
    server = Server(kdct, jobs=1)
    rows = []
    try:
        for case, (source, cli_options, job_options) in CASES.items():
            source = os.path.join(WORK, source)
            bench.warm(source)
            out = {"cli": os.path.join(WORK, "serve-bench-cli.qcow2"), "service": os.path.join(WORK, "serve-bench-service.qcow2")}
            times = {"cli": [], "service": [], "service-job": []}
            cpu = {"cli": [], "service": []}
            for run in range(runs):
                for tool in (("cli", "service") if run % 2 == 0 else ("service", "cli")):
                    if os.path.exists(out[tool]):
                        os.unlink(out[tool])
                    subprocess.run(["sync"], check=True)
                    start = time.monotonic()
                    if tool == "cli":
                        before = resource.getrusage(resource.RUSAGE_CHILDREN)
                        subprocess.run([kdct, "convert", "-O", "qcow2", *cli_options, source, out[tool]], check=True,
                                       stdout=subprocess.DEVNULL)
                        after = resource.getrusage(resource.RUSAGE_CHILDREN)
                        cpu[tool].append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
                    else:
                        # The server's own CPU seconds over the job (it does nothing else meanwhile).
                        before = server.cpu_seconds()
                        job = server.wait_for_events(server.convert(source, out[tool], job_options))
                        cpu[tool].append(server.cpu_seconds() - before)
                        times["service-job"].append(job["result"]["elapsed-seconds"])
                    times[tool].append(time.monotonic() - start)
            same = subprocess.run(["qemu-img", "compare", out["cli"], out["service"]], capture_output=True).returncode == 0
            for path in out.values():
                os.unlink(path)
            median = {tool: statistics.median(values) for tool, values in times.items()}
            cpu_median = {tool: statistics.median(values) for tool, values in cpu.items()}
            rows.append((case, median, times, same))
            print(f"{case}: cli {median['cli']:.2f} s, service {median['service']:.2f} s "
                  f"(job {median['service-job']:.2f} s), ratio {median['service'] / median['cli']:.3f}; "
                  f"CPU cli {cpu_median['cli']:.2f} s, service {cpu_median['service']:.2f} s, "
                  f"ratio {cpu_median['service'] / cpu_median['cli']:.3f}; identical={same}", flush=True)
            print(f"  wall s, in run order: cli {' '.join(f'{t:.2f}' for t in times['cli'])}; "
                  f"service {' '.join(f'{t:.2f}' for t in times['service'])}", flush=True)
    finally:
        server.stop()
    return rows


def load(kdct, seconds):
    """Latencies of 8 clients while 2 conversions run; idle RSS and CPU before, peak RSS after."""
    server = Server(kdct, jobs=2)
    idle = {}
    try:
        time.sleep(5)
        idle["rss"] = server.memory("VmRSS")
        cpu_before = server.cpu_seconds()
        time.sleep(30)
        idle["cpu"] = server.cpu_seconds() - cpu_before
        print(f"idle: RSS {idle['rss']:.1f} MiB, CPU {idle['cpu']:.2f} s in 30 s", flush=True)

        source = os.path.join(WORK, "workload.qcow2")
        deadline = time.monotonic() + seconds
        running = {}
        finished = []
        lock = threading.Lock()

        def conversions(slot):
            destination = os.path.join(WORK, f"serve-load-{slot}.qcow2")
            while time.monotonic() < deadline:
                job_id = server.convert(source, destination, {})
                with lock:
                    running[slot] = job_id
                job = server.wait(job_id, interval=0.2)
                finished.append(job["result"]["elapsed-seconds"])
            os.unlink(destination)

        latencies = {"list folder": [], "inspect": [], "poll job": [], "list jobs": []}
        errors = []

        def client(index):
            kinds = list(latencies)
            step = index
            while time.monotonic() < deadline:
                kind = kinds[step % len(kinds)]
                step += 1
                with lock:
                    job_id = running.get(step % 2) or running.get(0)
                if kind == "list folder":
                    call = ("GET", "/files?path=" + WORK, None)
                elif kind == "inspect":
                    call = ("POST", "/inspect", {"path": os.path.join(WORK, "workload.vmdk")})
                elif kind == "poll job" and job_id:
                    call = ("GET", f"/jobs/{job_id}", None)
                else:
                    call = ("GET", "/jobs?limit=20", None)
                    kind = "list jobs"
                start = time.monotonic()
                status, _ = server.request(*call)
                latencies[kind].append(time.monotonic() - start)
                if status != 200:
                    errors.append((kind, status))

        threads = [threading.Thread(target=conversions, args=(slot,)) for slot in range(2)]
        threads += [threading.Thread(target=client, args=(index,)) for index in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        peak = server.memory("VmHWM")
    finally:
        server.stop()

    def percentile(values, fraction):
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000

    everything = [value for values in latencies.values() for value in values]
    stats = {kind: (len(values), percentile(values, 0.5), percentile(values, 0.99)) for kind, values in latencies.items()}
    stats["all"] = (len(everything), percentile(everything, 0.5), percentile(everything, 0.99))
    for kind, (count, p50, p99) in stats.items():
        print(f"{kind}: {count} requests, p50 {p50:.1f} ms, p99 {p99:.1f} ms", flush=True)
    print(f"conversions finished during the load: {len(finished)}, median {statistics.median(finished):.2f} s; "
          f"errors {len(errors)}; peak RSS {peak:.1f} MiB", flush=True)
    return stats, finished, errors, idle, peak


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--kdct", default=os.path.join(ROOT, ".build/release/kdct-native"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--part", choices=["all", "speed", "load"], default="all", help="run one part only")
    args = parser.parse_args()
    bench.build_workload()
    print(f"machine: {bench.machine()}", flush=True)
    print(time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), f"load average {os.getloadavg()}", flush=True)
    if args.part in ("all", "speed"):
        speed(args.kdct, args.runs)
    if args.part in ("all", "load"):
        load(args.kdct, args.seconds)
    print(f"load average after: {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    main()
