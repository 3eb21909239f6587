#!/usr/bin/env python3
"""Instruction counts only: callgrind per request for modegate on hyper's and on its native
HTTP/1.1 engine, nginx, and nginx with lua (policy route), on the passthrough and policy
scenarios of bench.py. Deterministic, so it runs on a busy machine; a few minutes.

    python3 bench/callgrind.py --bin target/release/modegate [--requests 2000] [--keep]
    python3 bench/callgrind.py --only before,modegate --build before=/path/to/old/modegate

--build NAME=BIN (repeatable) measures another modegate build beside this one, on its default
engine (a before / after comparison in one run). --keep leaves the callgrind output files in
bench/work/callgrind/ (callgrind_annotate them).

--cache-sim adds callgrind's cache and branch simulation and reports, beside each event per
request, an estimate of cycles (instructions + 10 per L1 miss + 100 per last-level miss + 15 per
mispredicted branch): deterministic, for what instruction counts leave out.

--cpu-rounds N measures CPU time per request instead (utime + stime of the contender at 8,000
req/s for 6 s after a warm-up, the scenarios of bench.py), the contenders interleaved round by
round in alternating order, so that a machine's drift during the run reaches every contender
alike; it reports each contender's runs and their median. For a before / after comparison of
CPU time on a machine whose noise is larger than the difference (bench.py measures contenders
one after the other):

    python3 bench/callgrind.py --only before,modegate --build before=/path/to/old/modegate --cpu-rounds 7
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import time

import bench

HERE = bench.HERE


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(bench.ROOT, "target", "release", "modegate"))
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--only", help="comma-separated contenders (default: all)")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--build", action="append", default=[], metavar="NAME=BIN",
                    help="another modegate build, measured on its default engine")
    ap.add_argument("--cpu-rounds", type=int, default=0, metavar="N",
                    help="CPU time per request at 8,000 req/s instead, N interleaved rounds")
    ap.add_argument("--scenario", help="only this scenario (a_passthrough or b_policy_send)")
    ap.add_argument("--cache-sim", action="store_true", help="simulate caches and branches too")
    args = ap.parse_args()
    work = os.path.join(HERE, "work", "callgrind")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    os.chmod(work, 0o777)
    ports = {k: bench.free_port() for k in ("UP", "NGINX", "MG", "ADMIN", "NGINX_LUA", "HAPROXY")}
    subst = {"WORK": work, "PAD": "x" * 900, "MAXAPPS": "1000", **{k: str(v) for k, v in ports.items()}}

    def render(name, extra=None, out=None):
        text = open(os.path.join(HERE, name)).read()
        for k, v in {**subst, **(extra or {})}.items():
            text = text.replace("{{" + k + "}}", v)
        path = os.path.join(work, out or name.replace(".tmpl", ""))
        open(path, "w").write(text)
        return path

    up = subprocess.Popen(["taskset", "-c", bench.SUPPORT_CPU, "nginx", "-p", work, "-c", render("upstream.nginx.conf.tmpl"),
                           "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {"TOKIO_WORKER_THREADS": "1", "RUST_LOG": "warn"}
    mg = lambda engine, binary=args.bin: (
        [os.path.abspath(binary), "serve", "--config",
         render("modegate.toml.tmpl", {"ENGINE": bench.ENGINE_LINE[engine]}, f"modegate-{engine}.toml")],
        ports["MG"], env, bench.SCENARIOS_CPU)
    cg = {
        "modegate": mg("hyper"),
        "modegate_native": mg("native"),
        "nginx": (["nginx", "-p", work, "-c", render("proxy.nginx.conf.tmpl"), "-g", "daemon off; master_process off;"],
                  ports["NGINX"], None, bench.SCENARIOS_CPU),
    }
    for build in args.build:
        name, sep, binary = build.partition("=")
        if not sep or not name or not binary:
            raise SystemExit(f"--build {build!r}: expected NAME=BIN")
        cg[name] = mg("hyper", binary)
    if os.path.exists("/usr/lib/nginx/modules/ngx_http_lua_module.so"):
        cg["nginx_lua"] = (["nginx", "-p", work, "-c", render("proxy-lua.nginx.conf.tmpl"), "-g", "daemon off; master_process off;"],
                           ports["NGINX_LUA"], None, ("b_policy_send",))
    only = set(args.only.split(",")) if args.only else None
    results = {}
    try:
        bench.wait_port(ports["UP"])
        if args.cpu_rounds:
            chosen = {name: (cmd, port, e, tuple(sc for sc in scs if sc == (args.scenario or sc)))
                      for name, (cmd, port, e, scs) in cg.items() if not only or name in only}
            results = cpu_rounds(chosen, args.cpu_rounds, work)
            print(json.dumps(results, indent=2))
            return
        for name, (cmd, port, e, scenarios) in cg.items():
            if only and name not in only:
                continue
            results[name] = {sc: measure(name, cmd, port, sc, args, work, e)
                             for sc in scenarios if sc == (args.scenario or sc)}
            print(name, json.dumps(results[name]), flush=True)
    finally:
        up.terminate()
        up.wait(timeout=10)
    print(json.dumps(results, indent=2))


def measure(name, cmd, port, scenario, args, work, env):
    """Instructions per request, or with --cache-sim every simulated event and a cycle estimate."""
    got = bench.instructions_per_request(name, cmd, port, scenario, args.requests, work, env,
                                         keep=args.keep, simulate=args.cache_sim)
    if not args.cache_sim or not got:
        return got
    l1 = sum(got.get(e, 0) for e in ("I1mr", "D1mr", "D1mw"))
    ll = sum(got.get(e, 0) for e in ("ILmr", "DLmr", "DLmw"))
    branches = got.get("Bcm", 0) + got.get("Bim", 0)
    got = {e: round(v, 1) for e, v in got.items()}
    got["estimated_cycles"] = round(got["Ir"] + 10 * l1 + 100 * ll + 15 * branches)
    return got


def cpu_rounds(contenders, rounds, work, rate=8000, seconds=6, conns=32):
    """CPU µs per request of each contender and scenario (bench.py's `cpu_at_rate` on its
    `Contender`), the contenders interleaved."""
    runs = {name: {sc: [] for sc in scenarios} for name, (_, _, _, scenarios) in contenders.items()}
    names = list(contenders)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            cmd, port, env, scenarios = contenders[name]
            contender = bench.Contender(name, port, cmd, env=env, work=work).start()
            try:
                for sc in scenarios:
                    bench.oha(port, sc, 2000, 2, conns)  # warm-up: connections, pools, caches
                    answer = bench.cpu_at_rate(contender, sc, rate, seconds, conns, smoke=False)
                    runs[name][sc].append(round(answer["cpu_us_per_req"], 2))
                    print(name, sc, runs[name][sc][-1], flush=True)
            finally:
                contender.stop()
            time.sleep(0.5)
    return {name: {sc: {"median": statistics.median(v), "runs": v} for sc, v in per.items()}
            for name, per in runs.items()}


if __name__ == "__main__":
    main()
