#!/usr/bin/env python3
"""modegate benchmark driver: direct vs nginx proxy_pass vs HAProxy vs modegate (on hyper's and on
its native HTTP/1.1 engine), and for the policy route nginx with lua; loopback only, pinned.

Invoked by bench/run.sh (which installs the tools and builds the release binary). Writes
bench/results.json (raw numbers) and bench/results.md (the table), or with --smoke a short run
into bench/work/bench/ that only checks the pipeline works.
"""
import argparse
import json
import os
import platform
import re
import resource
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CONTENDER_CPU = "0"
SUPPORT_CPU = "1"
TICK = os.sysconf("SC_CLK_TCK")

SCENARIOS = {
    "a_passthrough": {"path": "/v1/projects/bench/other/path", "script": "get.lua", "method": "GET"},
    "b_policy_send": {"path": "/v1/projects/bench/messages:send", "script": "send.lua", "method": "POST"},
    "c_rejected": {"path": "/v1/projects/bench/messages?app_id=dispatch-app&contact_id=alice", "script": "reject.lua", "method": "GET"},
}


# The `[server]` line of bench/modegate.toml.tmpl per HTTP/1.1 engine (nothing for the default).
ENGINE_LINE = {"hyper": "", "native": 'http1_engine = "native"'}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def proc_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def proc_run_ns(pid):
    """Nanoseconds the scheduler has run the threads of `pid` (each thread's schedstat)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:
            pass  # a thread that ended between the listing and the read
    return total


def status_kb(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def children(pid):
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except OSError:
                pass
    return out


def settled_kb(read_kb, within=20.0):
    """A memory reading once it has settled: sampled every 0.25 s until it has moved by less
    than 64 KiB over the last second (at most `within` seconds). A reading at a fixed moment
    can catch buffers part-filled or freed memory not yet returned, and then depends on timing."""
    samples = [read_kb()]
    deadline = time.time() + within
    while time.time() < deadline:
        time.sleep(0.25)
        samples.append(read_kb())
        if len(samples) >= 5 and max(samples[-5:]) - min(samples[-5:]) < 64:
            break
    return samples[-1]


class Contender:
    """A proxy process pinned to the contender CPU (or nothing, for direct)."""

    def __init__(self, name, port, cmd=None, env=None, work=None, scenarios=None):
        self.name, self.port, self.cmd, self.env, self.proc = name, port, cmd, env, None
        # The scenarios it is measured on (None: all).
        self.scenarios = scenarios
        self.log = os.path.join(work, f"{name}.log") if work else None

    def start(self):
        if self.cmd:
            self.proc = subprocess.Popen(
                ["taskset", "-c", CONTENDER_CPU] + self.cmd,
                env={**os.environ, **(self.env or {})},
                stdout=open(self.log, "w"), stderr=subprocess.STDOUT,
            )
            wait_port(self.port)
        return self

    def pids(self):
        if not self.proc:
            return []
        return [self.proc.pid] + children(self.proc.pid)

    def ticks(self):
        return sum(proc_ticks(p) for p in self.pids())

    def run_ns(self):
        """Nanoseconds the scheduler has run the contender's threads: finer than `ticks`, for
        short windows."""
        return sum(proc_run_ns(p) for p in self.pids())

    def rss_kb(self, key="VmRSS"):
        return sum(status_kb(p, key) for p in self.pids())

    def stop(self):
        if self.proc:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None


def wrk(port, scenario, seconds, conns):
    sc = SCENARIOS[scenario]
    script = os.path.join(HERE, "wrk", sc["script"])
    combined = os.path.join(HERE, "work", "bench", f"wrk-{sc['script']}")
    with open(combined, "w") as out:
        out.write(open(script).read() + "\n" + open(os.path.join(HERE, "wrk", "report.lua")).read())
    cmd = ["taskset", "-c", SUPPORT_CPU, "wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "-s", combined,
           f"http://127.0.0.1:{port}{sc['path']}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    line = next(l for l in out.splitlines() if l.startswith("WRK_JSON "))
    r = json.loads(line[len("WRK_JSON "):])
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    return r


def oha_cmd(port, scenario, conns):
    sc = SCENARIOS[scenario]
    cmd = ["taskset", "-c", SUPPORT_CPU, "oha", "--no-tui", "--output-format", "json",
           "-c", str(conns), "-H", "Authorization: Bearer bench-token"]
    if sc["method"] == "POST":
        body = json.dumps({"app_id": "dispatch-app", "recipient": {"identified_by": {"channel_identities": [
            {"channel": "SMS", "identity": "+15550100"}]}}, "message": {"text_message": {"text": "x" * 820}},
            "message_metadata": "bench"})
        cmd += ["-m", "POST", "-T", "application/json", "-d", body]
    return cmd, f"http://127.0.0.1:{port}{sc['path']}"


def oha(port, scenario, rate, seconds, conns):
    """A fixed-rate (open-loop, latency-corrected) run."""
    cmd, url = oha_cmd(port, scenario, conns)
    cmd += ["--latency-correction", "-z", f"{seconds}s", "-q", str(int(rate)), url]
    v = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    p = v["latencyPercentiles"]
    answered = sum(v.get("statusCodeDistribution", {}).values())
    return {
        "rate": int(rate), "answered": answered,
        "achieved_rps": v["summary"]["requestsPerSec"],
        "success_rate": v["summary"]["successRate"],
        "p50_ms": (p["p50"] or 0) * 1000, "p99_ms": (p["p99"] or 0) * 1000, "p999_ms": (p["p99.9"] or 0) * 1000,
    }


def smoke_rate(port, scenario, rate, seconds, conns):
    """The smoke's stand-in for oha: a closed-loop wrk run shaped like a fixed-rate result. It
    checks the pipeline only (CI compiles no load generator); the full run always uses oha."""
    r = wrk(port, scenario, seconds, conns)
    return {
        "rate": int(rate), "answered": r["requests"], "achieved_rps": r["rps"], "success_rate": 1.0,
        "p50_ms": r["p50_us"] / 1000, "p99_ms": r["p99_us"] / 1000, "p999_ms": r["p999_us"] / 1000,
    }


def saturate(contender, scenario, seconds, conns):
    before = contender.ticks()
    r = wrk(contender.port, scenario, seconds, conns)
    used = contender.ticks() - before
    r["cpu_ms_per_1k"] = (used / TICK * 1000) / (r["requests"] / 1000) if contender.proc and r["requests"] else None
    return r


def version(cmd):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True)
        return (p.stdout + p.stderr).strip().splitlines()[0]
    except (OSError, IndexError):
        return "unknown"


def metric(admin_port, name, labels=""):
    text = urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics").read().decode()
    for line in text.splitlines():
        if line.startswith(name) and labels in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def count_lines(path, needle=""):
    try:
        with open(path) as f:
            return sum(1 for l in f if needle in l)
    except FileNotFoundError:
        return 0


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def spread(xs):
    return {"median": median(xs), "min": min(xs), "max": max(xs), "runs": xs}


def cpu_at_rate(contender, scenario, rate, seconds, conns, smoke):
    """CPU (utime + stime of the contender's process tree) per answered request over a
    fixed-rate run, in µs, with the run's latency."""
    before = contender.ticks()
    r = (smoke_rate if smoke else oha)(contender.port, scenario, rate, seconds, conns)
    used = contender.ticks() - before
    r["cpu_us_per_req"] = (used / TICK * 1e6) / r["answered"] if contender.proc and r["answered"] else None
    return r


SCENARIOS_CPU = ("a_passthrough", "b_policy_send")


def instructions_per_request(name, cmd, port, scenario, requests, work, env=None, keep=False, simulate=False):
    """Instructions per request of `cmd` under callgrind: counters zeroed after a warm-up,
    dumped after `requests` more. Deterministic, unlike CPU time on a shared machine. `keep`
    leaves the profile (the last dump) in `work`. `simulate` adds callgrind's cache and branch
    simulation and returns every event per request instead (a dict: Ir, I1mr, D1mr, ...)."""
    out = os.path.join(work, f"callgrind-{name}-{scenario}")
    sim = ["--cache-sim=yes", "--branch-sim=yes"] if simulate else []
    proc = subprocess.Popen(["taskset", "-c", CONTENDER_CPU, "valgrind", "--tool=callgrind", "--trace-children=no",
                             f"--callgrind-out-file={out}.%p"] + sim + cmd,
                            env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, timeout=120)
        load, url = oha_cmd(port, scenario, 8)
        subprocess.run(load + ["-n", "500", url], capture_output=True, check=True)
        subprocess.run(["callgrind_control", "-z", str(proc.pid)], capture_output=True, check=True)
        subprocess.run(load + ["-n", str(requests), url], capture_output=True, check=True)
        for f in os.listdir(work):
            if f.startswith(os.path.basename(out)):
                os.remove(os.path.join(work, f))
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], capture_output=True, check=True)
        total = None
        events = ["Ir"]
        deadline = time.time() + 30
        while total is None and time.time() < deadline:
            for f in os.listdir(work):
                if f.startswith(os.path.basename(out)):
                    for line in open(os.path.join(work, f)):
                        if line.startswith("events:"):
                            events = line.split()[1:]
                        if line.startswith("summary:") or line.startswith("totals:"):
                            total = [int(x) for x in line.split()[1:]]
            time.sleep(0.2)
        if not keep:
            for f in os.listdir(work):
                if f.startswith(os.path.basename(out)):
                    os.remove(os.path.join(work, f))
        if not total:
            return None
        if simulate:
            return {e: v / requests for e, v in zip(events, total)}
        return total[0] / requests
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true", help="short run that only checks the pipeline")
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "modegate"))
    ap.add_argument("--base-bin", help="an earlier modegate build, measured beside this one (before/after)")
    args = ap.parse_args()
    smoke = args.smoke
    runs = 1 if smoke else 3
    sat_s, cpu_s, lat_s = (1, 1, 1) if smoke else (5, 6, 5)
    sat_conns, rate_conns = 64, 32
    headline_rate = 8_000
    rates = [headline_rate] if smoke else [1_000, headline_rate, 20_000]
    fill_target = 2_000 if smoke else 100_000
    idle_count = 100 if smoke else 1_000
    cg_requests = 200 if smoke else 2_000

    work = os.path.join(HERE, "work", "bench")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    os.chmod(work, 0o777)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))

    ports = {k: free_port() for k in ("UP", "NGINX", "HAPROXY", "MG", "ADMIN", "NGINX_LUA")}
    subst = {"WORK": work, "PAD": "x" * 900, "MAXAPPS": str(fill_target), **{k: str(v) for k, v in ports.items()}}

    def render(name, extra=None, out=None):
        text = open(os.path.join(HERE, name)).read()
        for k, v in {**subst, **(extra or {})}.items():
            text = text.replace("{{" + k + "}}", v)
        path = os.path.join(work, out or name.replace(".tmpl", ""))
        with open(path, "w") as f:
            f.write(text)
        return path

    up_conf, ng_conf, ha_conf = render("upstream.nginx.conf.tmpl"), render("proxy.nginx.conf.tmpl"), render("haproxy.cfg.tmpl")
    mg_conf = render("modegate.toml.tmpl", {"ENGINE": ENGINE_LINE["hyper"]})
    mg_native_conf = render("modegate.toml.tmpl", {"ENGINE": ENGINE_LINE["native"]}, "modegate-native.toml")
    # nginx with lua-nginx-module (Debian's libnginx-mod-http-lua) and lua-cjson, when installed.
    lua = os.path.exists("/usr/lib/nginx/modules/ngx_http_lua_module.so") and \
        os.path.exists("/usr/lib/x86_64-linux-gnu/lua/5.1/cjson.so")
    lua_conf = render("proxy-lua.nginx.conf.tmpl") if lua else None
    upstream = subprocess.Popen(["taskset", "-c", SUPPORT_CPU, "nginx", "-p", work, "-c", up_conf, "-g", "daemon off;"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(ports["UP"])
    mg_env = {"TOKIO_WORKER_THREADS": "1", "RUST_LOG": "warn"}
    mg_cmd = lambda binary, conf=mg_conf: [binary, "serve", "--config", conf]
    contenders = {
        "direct": Contender("direct", ports["UP"]),
        "nginx": Contender("nginx", ports["NGINX"], ["nginx", "-p", work, "-c", ng_conf, "-g", "daemon off;"], work=work),
        "haproxy": Contender("haproxy", ports["HAPROXY"], ["haproxy", "-db", "-f", ha_conf], work=work),
        "modegate": Contender("modegate", ports["MG"], mg_cmd(args.bin), env=mg_env, work=work),
        # The same binary on its own HTTP/1.1 engine (server.http1_engine = "native").
        "modegate_native": Contender("modegate_native", ports["MG"], mg_cmd(args.bin, mg_native_conf), env=mg_env, work=work),
        # The runtime-shape comparison: the same binary on tokio's multi-thread scheduler.
        "modegate_multi_thread": Contender("modegate_multi_thread", ports["MG"], mg_cmd(args.bin),
                                           env={**mg_env, "MODEGATE_RUNTIME": "multi-thread"}, work=work),
    }
    if args.base_bin:
        contenders["modegate_before"] = Contender("modegate_before", ports["MG"], mg_cmd(args.base_bin), env=mg_env, work=work)
    if not shutil.which("haproxy"):
        del contenders["haproxy"]
    if lua:
        contenders["nginx_lua"] = Contender("nginx_lua", ports["NGINX_LUA"], ["nginx", "-p", work, "-c", lua_conf, "-g", "daemon off;"],
                                            work=work, scenarios=("b_policy_send",))
    cpu_scenarios = ("a_passthrough", "b_policy_send")
    results = {"smoke": smoke, "machine": {}, "cpu": {}, "latency": {}, "saturation": {}, "instructions": {},
               "resources": {}, "targets": {}}
    try:
        for name, c in contenders.items():
            c.start()
            for scenario in ("a_passthrough", "b_policy_send"):  # warm-up: connections, pools, caches
                if c.scenarios is None or scenario in c.scenarios:
                    wrk(c.port, scenario, 1, sat_conns)
            results["cpu"][name], results["latency"][name], results["saturation"][name] = {}, {}, {}
            for scenario in cpu_scenarios:
                if c.scenarios is not None and scenario not in c.scenarios:
                    continue
                at_rate = [cpu_at_rate(c, scenario, headline_rate, cpu_s, rate_conns, smoke) for _ in range(runs)]
                if c.proc:
                    results["cpu"][name][scenario] = spread([r["cpu_us_per_req"] for r in at_rate])
                results["latency"][name][scenario] = {str(headline_rate): {
                    k: spread([r[k] for r in at_rate]) for k in ("p50_ms", "p99_ms", "p999_ms", "achieved_rps")}}
                for rate in rates:
                    # The comparison builds (runtime shape, before/after) are measured at the
                    # headline rate only.
                    if rate == headline_rate or name in ("modegate_multi_thread", "modegate_before"):
                        continue
                    r = (smoke_rate if smoke else oha)(c.port, scenario, rate, lat_s, rate_conns)
                    results["latency"][name][scenario][str(rate)] = {k: spread([r[k]]) for k in ("p50_ms", "p99_ms", "p999_ms", "achieved_rps")}
            for scenario in SCENARIOS:
                if c.scenarios is not None and scenario not in c.scenarios:
                    continue
                if name.startswith("modegate") and scenario == "c_rejected":
                    open(os.path.join(work, "list.log"), "w").close()
                n = runs if scenario == "a_passthrough" else 1
                sat = [saturate(c, scenario, sat_s, sat_conns) for _ in range(n)]
                results["saturation"][name][scenario] = {
                    "rps": spread([s["rps"] for s in sat]),
                    "cpu_ms_per_1k": spread([s["cpu_ms_per_1k"] for s in sat]) if c.proc else None,
                }
            if name == "modegate":
                results["resources"]["modegate_list_requests_upstream_during_c"] = count_lines(os.path.join(work, "list.log"))
            results["resources"][f"{name}_peak_rss_kb"] = c.rss_kb("VmHWM") if c.proc else None
            c.stop()

        # Instruction counts under callgrind (one process per contender and scenario).
        if shutil.which("valgrind") and shutil.which("callgrind_control"):
            cg = {"nginx": (["nginx", "-p", work, "-c", ng_conf, "-g", "daemon off; master_process off;"], ports["NGINX"], None),
                  "modegate": (mg_cmd(args.bin), ports["MG"], mg_env),
                  "modegate_native": (mg_cmd(args.bin, mg_native_conf), ports["MG"], mg_env)}
            if "haproxy" in contenders:
                cg["haproxy"] = (["haproxy", "-db", "-f", ha_conf], ports["HAPROXY"], None)
            if args.base_bin:
                cg["modegate_before"] = (mg_cmd(args.base_bin), ports["MG"], mg_env)
            if lua:
                cg["nginx_lua"] = (["nginx", "-p", work, "-c", lua_conf, "-g", "daemon off; master_process off;"], ports["NGINX_LUA"], None)
            for name, (cmd, port, env) in cg.items():
                results["instructions"][name] = {
                    sc: instructions_per_request(name, cmd, port, sc, cg_requests, work, env)
                    for sc in cpu_scenarios if name != "nginx_lua" or sc == "b_policy_send"}

        # Each resource scenario starts from a fresh process, so memory the allocator kept from
        # earlier runs does not count against the next one.
        mg = contenders["modegate"]
        mg.start()
        # (e) idle keep-alive connections, twice, each on a fresh process: clients whose one
        # request each never overlapped (the target's figure), then clients that all sent at
        # once (up to 1,000 requests in flight, so the upstream pool fills to its idle limit).
        for key, extra in (("e_rss_kb_idle", []), ("e_rss_kb_idle_together", ["--together"])):
            if key != "e_rss_kb_idle":
                mg.stop()
                mg.start()
            rss_before = mg.rss_kb()
            idle = subprocess.Popen([sys.executable, os.path.join(HERE, "idle_conns.py"), "--addr", f"127.0.0.1:{ports['MG']}",
                                     "--count", str(idle_count), "--hold", "60"] + extra, stdout=subprocess.PIPE, text=True)
            line = idle.stdout.readline()
            if not line.startswith(f"idle connections answered: {idle_count}"):
                raise SystemExit(f"idle connections were not all answered: {line.strip()}")
            results["resources"][key] = settled_kb(mg.rss_kb)
            results["resources"][key.replace("idle", "before_idle")] = rss_before
            idle.kill()
            idle.wait(timeout=10)
        results["resources"]["e_idle_connections"] = idle_count
        mg.stop()
        # The same on the native engine.
        native = contenders["modegate_native"].start()
        idle = subprocess.Popen([sys.executable, os.path.join(HERE, "idle_conns.py"), "--addr", f"127.0.0.1:{ports['MG']}",
                                 "--count", str(idle_count), "--hold", "60"], stdout=subprocess.PIPE, text=True)
        line = idle.stdout.readline()
        if not line.startswith(f"idle connections answered: {idle_count}"):
            raise SystemExit(f"idle connections were not all answered (native engine): {line.strip()}")
        results["resources"]["native_e_rss_kb_idle"] = settled_kb(native.rss_kb)
        idle.kill()
        idle.wait(timeout=10)
        native.stop()
        mg.start()
        # (d) cold cache: concurrent requests for one unknown app → one upstream lookup.
        before = count_lines(os.path.join(work, "lookups.log"), "cold-app")
        cold = f"http://127.0.0.1:{ports['MG']}/v1/projects/bench/messages?app_id=cold-app&contact_id=alice"
        if smoke:
            subprocess.run(["taskset", "-c", SUPPORT_CPU, "wrk", "-t1", "-c200", "-d1s",
                            "-H", "Authorization: Bearer bench-token", cold], capture_output=True, check=True)
        else:
            subprocess.run(["taskset", "-c", SUPPORT_CPU, "oha", "--no-tui", "--output-format", "json", "-n", "1000",
                            "-c", "1000", "-H", "Authorization: Bearer bench-token", cold],
                           capture_output=True, check=True)
        results["resources"]["d_cold_cache_lookups"] = count_lines(os.path.join(work, "lookups.log"), "cold-app") - before
        mg.stop()
        mg.start()
        # RSS with many cached app modes.
        deadline = time.time() + (30 if smoke else 120)
        while metric(ports["ADMIN"], "modegate_mode_cache_apps", 'mode="DISPATCH"') < fill_target * 0.99 and time.time() < deadline:
            subprocess.run(["taskset", "-c", SUPPORT_CPU, "wrk", "-t1", "-c64", "-d3s", "-s", os.path.join(HERE, "wrk", "fill.lua"),
                            f"http://127.0.0.1:{ports['MG']}/"], capture_output=True, check=True)
        results["resources"]["cached_apps"] = metric(ports["ADMIN"], "modegate_mode_cache_apps", 'mode="DISPATCH"')
        results["resources"]["rss_kb_cached_apps"] = mg.rss_kb()
        mg.stop()
    finally:
        for c in contenders.values():
            c.stop()
        upstream.terminate()
        upstream.wait(timeout=10)

    results["machine"] = {
        "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown"),
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "pinning": f"contender (nginx 1 worker / HAProxy nbthread 1 / modegate TOKIO_WORKER_THREADS=1) on CPU {CONTENDER_CPU}; "
                   f"load generator and upstream nginx on CPU {SUPPORT_CPU}",
        "versions": {
            "modegate": version([args.bin, "--version"]),
            "nginx": version(["nginx", "-v"]),
            "haproxy": version(["haproxy", "-v"]) if "haproxy" in contenders else "not installed",
            "wrk": version(["wrk", "-v"]),
            "oha": version(["oha", "--version"]) if shutil.which("oha") else "not installed (smoke)",
            "valgrind": version(["valgrind", "--version"]) if shutil.which("valgrind") else "not installed",
            "rustc": version(["rustc", "--version"]),
        },
        "method": {"runs": runs, "headline_rate": headline_rate, "rates": rates, "cpu_run_s": cpu_s, "latency_run_s": lat_s,
                   "saturation_run_s": sat_s, "rate_connections": rate_conns, "saturation_connections": sat_conns,
                   "callgrind_requests": cg_requests},
    }
    evaluate(results)
    out_dir = work if smoke else HERE
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    # The Batch API section (bench/batch.py) is its own run: kept across this one.
    path, kept = os.path.join(out_dir, "results.md"), ""
    if os.path.exists(path):
        old = open(path).read()
        if "<!-- batch:start -->" in old and "<!-- batch:end -->" in old:
            kept = old[old.index("<!-- batch:start -->"):old.index("<!-- batch:end -->") + len("<!-- batch:end -->")]
    with open(path, "w") as f:
        f.write(markdown(results) + ("\n" + kept + "\n" if kept else ""))
    print(markdown(results))
    print(f"results written to {out_dir}/results.md and results.json")


def lat(results, who, scenario, rate, key):
    return results["latency"][who][scenario][str(rate)][key]["median"]


def evaluate(r):
    cpu, sat, res, t = r["cpu"], r["saturation"], r["resources"], r["targets"]
    rate = r["machine"]["method"]["headline_rate"] if r["machine"] else 8000
    mg_a, ng_a = cpu["modegate"]["a_passthrough"]["median"], cpu["nginx"]["a_passthrough"]["median"]
    t["a_cpu_vs_nginx"] = {"value": mg_a / ng_a, "target": "<= 1.0"}
    if "haproxy" in cpu:
        t["a_cpu_vs_haproxy"] = {"value": mg_a / cpu["haproxy"]["a_passthrough"]["median"], "target": "<= 1.0"}
    t["a_saturated_rps_vs_nginx"] = {"value": sat["modegate"]["a_passthrough"]["rps"]["median"] / sat["nginx"]["a_passthrough"]["rps"]["median"], "target": ">= 1.0"}
    t["b_policy_cpu_vs_own_passthrough"] = {"value": cpu["modegate"]["b_policy_send"]["median"] / mg_a, "target": "<= 1.2"}
    t["b_policy_p99_ms_at_fixed_rate"] = {"value": lat(r, "modegate", "b_policy_send", rate, "p99_ms"), "target": "<= 2.0"}
    direct99 = lat(r, "direct", "a_passthrough", rate, "p99_ms")
    mg_added, ng_added = lat(r, "modegate", "a_passthrough", rate, "p99_ms") - direct99, lat(r, "nginx", "a_passthrough", rate, "p99_ms") - direct99
    t["a_added_p99_ms_vs_nginx_added"] = {"value": mg_added - ng_added, "target": "<= 0.25"}
    t["c_rejection_upstream_calls"] = {"value": res["modegate_list_requests_upstream_during_c"], "target": "== 0"}
    t["d_cold_cache_lookups"] = {"value": res["d_cold_cache_lookups"], "target": "== 1"}
    t["e_rss_mb_1000_idle"] = {"value": res["e_rss_kb_idle"] / 1024, "target": "<= 30"}
    t["e_rss_mb_100k_modes"] = {"value": res["rss_kb_cached_apps"] / 1024, "target": "<= 64"}
    # The native HTTP/1.1 engine's targets (issue "an HTTP/1.1 path of our own").
    if "modegate_native" in cpu:
        nv_a = cpu["modegate_native"]["a_passthrough"]["median"]
        t["native_a_cpu_vs_nginx"] = {"value": nv_a / ng_a, "target": "<= 1.0"}
        ins = r["instructions"]
        if ins.get("modegate_native", {}).get("a_passthrough") and ins.get("nginx", {}).get("a_passthrough"):
            t["native_a_instructions_vs_nginx"] = {"value": ins["modegate_native"]["a_passthrough"] / ins["nginx"]["a_passthrough"], "target": "<= 1.1"}
        t["native_a_saturated_rps_vs_nginx"] = {"value": sat["modegate_native"]["a_passthrough"]["rps"]["median"] / sat["nginx"]["a_passthrough"]["rps"]["median"], "target": ">= 1.0"}
        t["native_b_policy_cpu_vs_own_passthrough"] = {"value": cpu["modegate_native"]["b_policy_send"]["median"] / nv_a, "target": "<= 1.1"}
        nv_added = lat(r, "modegate_native", "a_passthrough", rate, "p99_ms") - direct99
        t["native_a_added_p99_ms_vs_nginx_added"] = {"value": nv_added - ng_added, "target": "<= 0.1"}
        t["native_b_policy_p99_ms_at_fixed_rate"] = {"value": lat(r, "modegate_native", "b_policy_send", rate, "p99_ms"), "target": "<= 2.0"}
        if "native_e_rss_kb_idle" in res:
            t["native_e_rss_mb_1000_idle"] = {"value": res["native_e_rss_kb_idle"] / 1024, "target": "<= 20"}
    if "nginx_lua" in cpu and "modegate_native" in cpu:
        t["native_b_policy_cpu_vs_nginx_lua"] = {"value": cpu["modegate_native"]["b_policy_send"]["median"] / cpu["nginx_lua"]["b_policy_send"]["median"], "target": "<= 1.0"}
    for v in t.values():
        op, num = v["target"].split()[0], float(v["target"].split()[1])
        v["met"] = {">=": v["value"] >= num, "<=": v["value"] <= num, "==": v["value"] == num}[op]


def fmt_spread(s, digits=1):
    if s is None:
        return "—"
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}–{s['max']:.{digits}f})"


def markdown(r):
    m = r["machine"]
    meth = m["method"]
    out = ["# modegate benchmark results", ""]
    if r["smoke"]:
        out += ["**Smoke run: durations too short for the numbers to mean anything.**", ""]
    out += [f"- Machine: {m['cpu']}, {m['cores']} cores, Linux {m['kernel']}",
            f"- Pinning: {m['pinning']}",
            "- Versions: " + ", ".join(f"{k} `{v}`" for k, v in m["versions"].items()),
            f"- Method: every figure is the median of {meth['runs']} runs (min–max in brackets) unless marked; "
            f"fixed-rate runs are oha with latency correction, {meth['rate_connections']} connections, {meth['cpu_run_s']} s; "
            f"saturation runs are wrk, 1 thread, {meth['saturation_connections']} connections, {meth['saturation_run_s']} s. "
            "CPU is utime + stime of the contender's whole process tree per answered request.",
            "", f"## CPU per request at {meth['headline_rate']} req/s (the headline)", "",
            "| contender | a passthrough µs / req | b policy POST 1 KB µs / req | vs nginx (a) |",
            "| --- | ---: | ---: | ---: |"]
    ng = r["cpu"]["nginx"]["a_passthrough"]["median"]
    for name, v in r["cpu"].items():
        if not v:
            continue
        vs = f"{v['a_passthrough']['median'] / ng:.2f}×" if "a_passthrough" in v else "—"
        out.append(f"| {name} | {fmt_spread(v.get('a_passthrough'))} | {fmt_spread(v.get('b_policy_send'))} | {vs} |")
    if r["instructions"]:
        out += ["", f"## Instructions per request (callgrind, {meth['callgrind_requests']} requests after a warm-up; deterministic)", "",
                "| contender | a passthrough | b policy POST 1 KB |", "| --- | ---: | ---: |"]
        for name, v in r["instructions"].items():
            cell = lambda x: "—" if x is None else f"{x:,.0f}"
            out.append(f"| {name} | {cell(v.get('a_passthrough'))} | {cell(v.get('b_policy_send'))} |")
    out += ["", "## Latency at fixed rates: added over direct (ms)", "",
            "| scenario | rate | direct p50 / p99 / p99.9 | contender | added p50 / p99 / p99.9 |", "| --- | ---: | --- | --- | --- |"]
    for sc in ("a_passthrough", "b_policy_send"):
        for rate in meth["rates"]:
            d = r["latency"]["direct"][sc][str(rate)]
            trip = lambda x: f"{x['p50_ms']['median']:.3f} / {x['p99_ms']['median']:.3f} / {x['p999_ms']['median']:.3f}"
            for name in r["latency"]:
                if name == "direct" or str(rate) not in r["latency"][name].get(sc, {}):
                    continue
                x = r["latency"][name][sc][str(rate)]
                add = " / ".join(f"{x[k]['median'] - d[k]['median']:+.3f}" for k in ("p50_ms", "p99_ms", "p999_ms"))
                out.append(f"| {sc} | {rate} | {trip(d)} | {name} | {add} |")
    out += ["", "## Throughput at saturation", "",
            "| contender | a passthrough rps | b policy rps | c rejected rps | a CPU ms / 1k req |", "| --- | ---: | ---: | ---: | ---: |"]
    for name, v in r["saturation"].items():
        rps = lambda sc: f"{v[sc]['rps']['median']:.0f}" if sc in v else "—"
        a = v.get("a_passthrough")
        out.append(f"| {name} | {fmt_spread(a['rps'], 0) if a else '—'} | {rps('b_policy_send')} | "
                   f"{rps('c_rejected')} | {fmt_spread(a['cpu_ms_per_1k']) if a else '—'} |")
    out += ["", "Scenario c is answered by modegate itself (400, no upstream call); the others forward it. "
            "b and c are single runs.", ""]
    res = r["resources"]
    out += ["## Resources", "",
            f"- (d) 1,000 concurrent requests for one unknown app: {res['d_cold_cache_lookups']} upstream lookup(s)",
            f"- (e) {res['e_idle_connections']} idle keep-alive connections, each after one request: modegate RSS "
            f"{res['e_rss_kb_idle'] / 1024:.1f} MB ({res['e_rss_kb_before_idle'] / 1024:.1f} MB before, "
            f"{(res['e_rss_kb_idle'] - res['e_rss_kb_before_idle']) / max(res['e_idle_connections'], 1):.1f} KB per connection); "
            f"when all {res['e_idle_connections']} requests were sent at once, {res['e_rss_kb_idle_together'] / 1024:.1f} MB "
            f"({res['e_rss_kb_before_idle_together'] / 1024:.1f} MB before; this includes the upstream connections opened "
            "for them, up to `pool_max_idle_per_host` = 256 of which the pool keeps)",
            f"- {res['cached_apps']:.0f} cached app modes: modegate RSS {res['rss_kb_cached_apps'] / 1024:.1f} MB",
            f"- On the native HTTP/1.1 engine, {res['e_idle_connections']} idle keep-alive connections: RSS "
            f"{res.get('native_e_rss_kb_idle', 0) / 1024:.1f} MB",
            "- Peak RSS over the CPU, latency and saturation runs: " + ", ".join(
                f"{k[:-len('_peak_rss_kb')]} {v / 1024:.1f} MB" for k, v in res.items() if k.endswith("_peak_rss_kb") and v),
            "", "## Targets", "", "| target | value | goal | met |", "| --- | ---: | --- | --- |"]
    for k, v in r["targets"].items():
        out.append(f"| {k} | {v['value']:.3f} | {v['target']} | {'yes' if v['met'] else '**no**'} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
