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

--cpu-rounds N measures CPU time per request instead: the scheduler's run time of the
contender's threads per answered request at 8,000 req/s (the scenarios of bench.py). All the
contenders named run at once, pinned to the contender CPU, and each round loads each in turn for
--cpu-seconds (default 2), in alternating order, so that a round's windows are seconds apart
and the machine's drift (minutes long here) reaches every contender alike. It reports each
contender's windows and their median and, for two contenders, the ratio of each round (the
first named in --only over the second), its median and a bootstrap 95% interval of that median.
For a before / after comparison of CPU time on a machine whose noise is larger than the
difference (bench.py measures contenders one after the other):

    python3 bench/callgrind.py --only modegate,before --build before=/path/to/old/modegate \
        --cpu-rounds 60 --scenario b_policy_send
"""
import argparse
import json
import os
import random
import shutil
import statistics
import subprocess

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
    ap.add_argument("--cpu-seconds", type=float, default=2, metavar="S",
                    help="with --cpu-rounds: the length of each measured window (default 2)")
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

    def mg(name, engine, binary=args.bin):
        """A modegate contender on ports of its own (so --cpu-rounds can keep them all running)."""
        port, admin = bench.free_port(), bench.free_port()
        config = render("modegate.toml.tmpl", {"ENGINE": bench.ENGINE_LINE[engine], "MG": str(port),
                                               "ADMIN": str(admin)}, f"modegate-{name}.toml")
        return [os.path.abspath(binary), "serve", "--config", config], port, env, bench.SCENARIOS_CPU

    cg = {
        "modegate": mg("modegate", "hyper"),
        "modegate_native": mg("modegate_native", "native"),
        "nginx": (["nginx", "-p", work, "-c", render("proxy.nginx.conf.tmpl"), "-g", "daemon off; master_process off;"],
                  ports["NGINX"], None, bench.SCENARIOS_CPU),
    }
    for build in args.build:
        name, sep, binary = build.partition("=")
        if not sep or not name or not binary:
            raise SystemExit(f"--build {build!r}: expected NAME=BIN")
        cg[name] = mg(name, "hyper", binary)
    if os.path.exists("/usr/lib/nginx/modules/ngx_http_lua_module.so"):
        cg["nginx_lua"] = (["nginx", "-p", work, "-c", render("proxy-lua.nginx.conf.tmpl"), "-g", "daemon off; master_process off;"],
                           ports["NGINX_LUA"], None, ("b_policy_send",))
    only = set(args.only.split(",")) if args.only else None
    results = {}
    try:
        bench.wait_port(ports["UP"])
        if args.cpu_rounds:
            order = [n for n in args.only.split(",") if n in cg] if args.only else list(cg)
            chosen = {name: (cmd, port, e, tuple(sc for sc in scs if sc == (args.scenario or sc)))
                      for name, (cmd, port, e, scs) in ((n, cg[n]) for n in order)}
            results = cpu_rounds(chosen, args.cpu_rounds, work, seconds=args.cpu_seconds)
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


def cpu_rounds(contenders, rounds, work, rate=8000, seconds=2, conns=32):
    """CPU µs per request of each contender and scenario at a fixed rate (bench.py's `oha`), the
    contenders interleaved: all of them run for the whole measurement (each on its own port,
    all pinned to the contender CPU, the idle ones waiting), and each round loads each of them
    in turn for `seconds`, in alternating order. A round's windows are seconds apart, so the
    machine's drift (minutes long on a shared virtual machine) reaches every contender alike.
    CPU time is the scheduler's run time of the contender's threads (`/proc/PID/task/*/
    schedstat`, nanoseconds), read around each window."""
    runs = {name: {sc: [] for sc in scenarios} for name, (_, _, _, scenarios) in contenders.items()}
    names = list(contenders)
    running = {}
    try:
        for name, (cmd, port, env, _) in contenders.items():
            running[name] = bench.Contender(name, port, cmd, env=env, work=work).start()
        for name, (_, port, _, scenarios) in contenders.items():
            for sc in scenarios:
                bench.oha(port, sc, 2000, 2, conns)  # warm-up: connections, pools, caches
        for r in range(rounds):
            for name in names if r % 2 == 0 else names[::-1]:
                _, port, _, scenarios = contenders[name]
                for sc in scenarios:
                    before = running[name].run_ns()
                    answered = bench.oha(port, sc, rate, seconds, conns)["answered"]
                    used = running[name].run_ns() - before
                    runs[name][sc].append(round(used / 1e3 / answered, 2) if answered else None)
                    print(name, sc, runs[name][sc][-1], flush=True)
    finally:
        for contender in running.values():
            contender.stop()
    result = {name: {sc: {"median": statistics.median(x for x in v if x), "runs": v} for sc, v in per.items()}
              for name, per in runs.items()}
    if len(names) == 2:
        result["paired"] = paired(names[0], names[1], runs)
    return result


def paired(first, second, runs, resamples=4000):
    """Two contenders measured round by round: the ratio first / second of each round (both
    measured within seconds of each other, so the machine's slower drift cancels), their median
    and a bootstrap 95% interval of that median (rounds resampled; fixed seed)."""
    rng = random.Random(0)
    out = {"of": f"{first} / {second}"}
    for sc, a in runs[first].items():
        ratios = [round(x / y, 4) for x, y in zip(a, runs[second].get(sc, [])) if x and y]
        if not ratios:
            continue
        medians = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(resamples))
        out[sc] = {"ratios": ratios, "median": round(statistics.median(ratios), 4),
                   "ci95": [round(medians[int(0.025 * resamples)], 4), round(medians[int(0.975 * resamples) - 1], 4)]}
    return out


if __name__ == "__main__":
    main()
