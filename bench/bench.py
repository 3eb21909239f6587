#!/usr/bin/env python3
"""modegate benchmark driver: direct vs nginx proxy_pass vs modegate, loopback only, pinned.

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


class Contender:
    """A proxy process pinned to the contender CPU (or nothing, for direct)."""

    def __init__(self, name, port, cmd=None, env=None, work=None):
        self.name, self.port, self.cmd, self.env, self.proc = name, port, cmd, env, None
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


def oha(port, scenario, rate, seconds, conns):
    sc = SCENARIOS[scenario]
    cmd = ["taskset", "-c", SUPPORT_CPU, "oha", "--no-tui", "--output-format", "json", "--latency-correction",
           "-z", f"{seconds}s", "-q", str(int(rate)), "-c", str(conns),
           "-H", "Authorization: Bearer bench-token"]
    if sc["method"] == "POST":
        body = json.dumps({"app_id": "dispatch-app", "recipient": {"identified_by": {"channel_identities": [
            {"channel": "SMS", "identity": "+15550100"}]}}, "message": {"text_message": {"text": "x" * 820}},
            "message_metadata": "bench"})
        cmd += ["-m", "POST", "-T", "application/json", "-d", body]
    cmd.append(f"http://127.0.0.1:{port}{sc['path']}")
    v = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    p = v["latencyPercentiles"]
    return {
        "rate": int(rate),
        "achieved_rps": v["summary"]["requestsPerSec"],
        "success_rate": v["summary"]["successRate"],
        "p50_ms": p["p50"] * 1000, "p99_ms": p["p99"] * 1000, "p999_ms": p["p99.9"] * 1000,
    }


def smoke_rate(port, scenario, rate, seconds, conns):
    """The smoke's stand-in for oha: a closed-loop wrk run shaped like a fixed-rate result. It
    checks the pipeline only (CI compiles no load generator); the full run always uses oha."""
    r = wrk(port, scenario, seconds, conns)
    return {
        "rate": int(rate), "achieved_rps": r["rps"], "success_rate": 1.0,
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true", help="short run that only checks the pipeline")
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "modegate"))
    args = ap.parse_args()
    smoke = args.smoke
    sat_s, lat_s = (1, 1) if smoke else (10, 10)
    conns = 64
    fill_target = 2_000 if smoke else 100_000
    idle_count = 100 if smoke else 1_000
    rates = [0.5] if smoke else [0.25, 0.5, 0.8]

    work = os.path.join(HERE, "work", "bench")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    os.chmod(work, 0o777)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))

    up_port, ng_port, mg_port, admin_port = free_port(), free_port(), free_port(), free_port()
    pad = "x" * 900
    subst = {"WORK": work, "UP": str(up_port), "NGINX": str(ng_port), "MG": str(mg_port),
             "ADMIN": str(admin_port), "PAD": pad, "MAXAPPS": str(fill_target)}

    def render(name):
        text = open(os.path.join(HERE, name)).read()
        for k, v in subst.items():
            text = text.replace("{{" + k + "}}", v)
        path = os.path.join(work, name.replace(".tmpl", ""))
        with open(path, "w") as f:
            f.write(text)
        return path

    up_conf, ng_conf, mg_conf = render("upstream.nginx.conf.tmpl"), render("proxy.nginx.conf.tmpl"), render("modegate.toml.tmpl")
    upstream = subprocess.Popen(["taskset", "-c", SUPPORT_CPU, "nginx", "-p", work, "-c", up_conf, "-g", "daemon off;"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(up_port)
    contenders = {
        "direct": Contender("direct", up_port),
        "nginx": Contender("nginx", ng_port, ["nginx", "-p", work, "-c", ng_conf, "-g", "daemon off;"], work=work),
        "modegate": Contender("modegate", mg_port, [args.bin, "serve", "--config", mg_conf],
                              env={"TOKIO_WORKER_THREADS": "1", "RUST_LOG": "warn"}, work=work),
    }
    results = {"smoke": smoke, "machine": {}, "saturation": {}, "latency": {}, "resources": {}, "targets": {}}
    try:
        for name, c in contenders.items():
            c.start()
            wrk(c.port, "a_passthrough", 1, conns)  # warm-up: connections, pools, caches
            results["saturation"][name] = {}
            for scenario in SCENARIOS:
                if name == "modegate" and scenario == "c_rejected":
                    open(os.path.join(work, "list.log"), "w").close()
                results["saturation"][name][scenario] = saturate(c, scenario, sat_s, conns)
            if name == "modegate":
                results["resources"]["modegate_list_requests_upstream_during_c"] = count_lines(os.path.join(work, "list.log"))
            results["latency"][name] = {}
            for scenario in ("a_passthrough", "b_policy_send"):
                direct_max = results["saturation"]["direct"][scenario]["rps"]
                fixed = smoke_rate if smoke else oha
                results["latency"][name][scenario] = [
                    dict(fixed(c.port, scenario, direct_max * f, lat_s, conns), load=f) for f in rates
                ]
            results["resources"][f"{name}_peak_rss_kb"] = c.rss_kb("VmHWM") if c.proc else None
            if name != "modegate":
                c.stop()

        # Each resource scenario starts from a fresh process, so memory the allocator kept from
        # earlier runs (the latency runs' overload points, 1,000 concurrent connections) does not
        # count against the next one.
        mg = contenders["modegate"]
        mg.stop()
        mg.start()
        # (e) idle keep-alive connections.
        rss_before = mg.rss_kb()
        idle = subprocess.Popen([sys.executable, os.path.join(HERE, "idle_conns.py"), "--addr", f"127.0.0.1:{mg_port}",
                                 "--count", str(idle_count), "--hold", "3"], stdout=subprocess.PIPE, text=True)
        time.sleep(2.0)
        results["resources"]["e_idle_connections"] = idle_count
        results["resources"]["e_rss_kb_idle"] = mg.rss_kb()
        results["resources"]["e_rss_kb_before_idle"] = rss_before
        if idle.wait(timeout=60) != 0:
            raise SystemExit("idle connections were not all answered")

        mg.stop()
        mg.start()
        # (d) cold cache: 1,000 concurrent requests for one unknown app → one upstream lookup.
        before = count_lines(os.path.join(work, "lookups.log"), "cold-app")
        cold = f"http://127.0.0.1:{mg_port}/v1/projects/bench/messages?app_id=cold-app&contact_id=alice"
        if smoke:
            # 200 connections' first requests arrive together: still one lookup.
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
        while metric(admin_port, "modegate_mode_cache_apps", 'mode="DISPATCH"') < fill_target * 0.99 and time.time() < deadline:
            subprocess.run(["taskset", "-c", SUPPORT_CPU, "wrk", "-t1", "-c64", "-d3s", "-s", os.path.join(HERE, "wrk", "fill.lua"),
                            f"http://127.0.0.1:{mg_port}/"], capture_output=True, check=True)
        results["resources"]["cached_apps"] = metric(admin_port, "modegate_mode_cache_apps", 'mode="DISPATCH"')
        results["resources"]["rss_kb_cached_apps"] = mg.rss_kb()
        results["resources"]["modegate_peak_rss_kb"] = mg.rss_kb("VmHWM")
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
        "pinning": f"contender (nginx 1 worker / modegate TOKIO_WORKER_THREADS=1) on CPU {CONTENDER_CPU}; "
                   f"load generator and upstream nginx on CPU {SUPPORT_CPU}",
        "versions": {
            "modegate": version([args.bin, "--version"]),
            "nginx": version(["nginx", "-v"]),
            "wrk": version(["wrk", "-v"]),
            "oha": version(["oha", "--version"]) if shutil.which("oha") else "not installed (smoke)",
            "rustc": version(["rustc", "--version"]),
        },
        "durations": {"saturation_s": sat_s, "latency_s": lat_s, "connections": conns},
    }
    evaluate(results)
    out_dir = work if smoke else HERE
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(markdown(results))
    print(markdown(results))
    print(f"results written to {out_dir}/results.md and results.json")


def added(results, who, scenario, load, key):
    mine = next(r for r in results["latency"][who][scenario] if r["load"] == load)
    direct = next(r for r in results["latency"]["direct"][scenario] if r["load"] == load)
    return mine[key] - direct[key]


def evaluate(r):
    s, res, t = r["saturation"], r["resources"], r["targets"]
    half = 0.5 if any(x["load"] == 0.5 for x in r["latency"]["direct"]["a_passthrough"]) else None
    t["a_throughput_vs_nginx"] = {"value": s["modegate"]["a_passthrough"]["rps"] / s["nginx"]["a_passthrough"]["rps"], "target": ">= 1.0"}
    if half:
        mg99, ng99 = added(r, "modegate", "a_passthrough", half, "p99_ms"), added(r, "nginx", "a_passthrough", half, "p99_ms")
        t["a_added_p99_ms_at_50pct"] = {"value": mg99, "target": f"<= 1.0 and <= nginx's {ng99:.3f}", "met": mg99 <= 1.0 and mg99 <= ng99}
    t["b_policy_vs_own_passthrough"] = {"value": s["modegate"]["b_policy_send"]["rps"] / s["modegate"]["a_passthrough"]["rps"], "target": ">= 0.8"}
    t["c_rejection_vs_own_passthrough"] = {"value": s["modegate"]["c_rejected"]["rps"] / s["modegate"]["a_passthrough"]["rps"], "target": ">= 1.5"}
    t["c_rejection_upstream_calls"] = {"value": res["modegate_list_requests_upstream_during_c"], "target": "== 0"}
    t["d_cold_cache_lookups"] = {"value": res["d_cold_cache_lookups"], "target": "== 1"}
    t["e_rss_mb_1000_idle"] = {"value": res["e_rss_kb_idle"] / 1024, "target": "<= 30"}
    t["e_rss_mb_100k_modes"] = {"value": res["rss_kb_cached_apps"] / 1024, "target": "<= 64"}
    for k, v in t.items():
        if "met" in v:
            continue
        target = v["target"]
        op, num = target.split()[0], float(target.split()[1])
        v["met"] = {">=": v["value"] >= num, "<=": v["value"] <= num, "==": v["value"] == num}[op]


def markdown(r):
    m, s, L = r["machine"], r["saturation"], r["latency"]
    out = ["# modegate benchmark results", ""]
    if r["smoke"]:
        out += ["**Smoke run: durations too short for the numbers to mean anything.**", ""]
    out += [f"- Machine: {m['cpu']}, {m['cores']} cores, Linux {m['kernel']}",
            f"- Pinning: {m['pinning']}",
            f"- Versions: " + ", ".join(f"{k} `{v}`" for k, v in m["versions"].items()),
            f"- Saturation runs: wrk, 1 thread, {m['durations']['connections']} connections, {m['durations']['saturation_s']} s each; "
            f"latency runs: oha with latency correction at fixed rates, {m['durations']['latency_s']} s each",
            "", "## Throughput at saturation", "",
            "| scenario | direct rps | nginx rps | modegate rps | modegate / nginx | nginx CPU ms / 1k req | modegate CPU ms / 1k req |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for sc in SCENARIOS:
        d, n, g = s["direct"][sc], s["nginx"][sc], s["modegate"][sc]
        fmt = lambda x: "—" if x is None else f"{x:.1f}"
        out.append(f"| {sc} | {d['rps']:.0f} | {n['rps']:.0f} | {g['rps']:.0f} | {g['rps'] / n['rps']:.2f}× | {fmt(n['cpu_ms_per_1k'])} | {fmt(g['cpu_ms_per_1k'])} |")
    out += ["", "Scenario c is answered by modegate itself (400, no upstream call); nginx and direct forward it.", "",
            "## Latency at fixed rates (added over direct, ms)", "",
            "| scenario | load | rate rps | direct p50 / p99 / p99.9 | nginx added p50 / p99 / p99.9 | modegate added p50 / p99 / p99.9 |",
            "| --- | ---: | ---: | --- | --- | --- |"]
    for sc in ("a_passthrough", "b_policy_send"):
        for i, d in enumerate(L["direct"][sc]):
            n, g = L["nginx"][sc][i], L["modegate"][sc][i]
            trip = lambda x: f"{x['p50_ms']:.3f} / {x['p99_ms']:.3f} / {x['p999_ms']:.3f}"
            add = lambda x: f"{x['p50_ms'] - d['p50_ms']:+.3f} / {x['p99_ms'] - d['p99_ms']:+.3f} / {x['p999_ms'] - d['p999_ms']:+.3f}"
            out.append(f"| {sc} | {int(d['load'] * 100)}% | {d['rate']} | {trip(d)} | {add(n)} | {add(g)} |")
    res = r["resources"]
    out += ["", "## Resources", "",
            f"- Peak RSS during the saturation and latency runs: nginx {res['nginx_peak_rss_kb'] / 1024:.1f} MB (master + worker), "
            f"modegate {res['modegate_peak_rss_kb'] / 1024:.1f} MB (whole run)",
            f"- (d) 1,000 concurrent requests for one unknown app: {res['d_cold_cache_lookups']} upstream lookup(s)",
            f"- (e) {res['e_idle_connections']} idle keep-alive connections: modegate RSS {res['e_rss_kb_idle'] / 1024:.1f} MB "
            f"({res['e_rss_kb_before_idle'] / 1024:.1f} MB before)",
            f"- {res['cached_apps']:.0f} cached app modes: modegate RSS {res['rss_kb_cached_apps'] / 1024:.1f} MB",
            "", "## Targets", "", "| target | value | goal | met |", "| --- | ---: | --- | --- |"]
    for k, v in r["targets"].items():
        val = v["value"]
        out.append(f"| {k} | {val:.3f} | {v['target']} | {'yes' if v['met'] else '**no**'} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
