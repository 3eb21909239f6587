#!/usr/bin/env python3
"""Instruction counts only: callgrind per request for modegate on hyper's and on its native
HTTP/1.1 engine, nginx, and nginx with lua (policy route), on the passthrough and policy
scenarios of bench.py. Deterministic, so it runs on a busy machine; a few minutes.

    python3 bench/callgrind.py --bin target/release/modegate [--requests 2000] [--keep]
    python3 bench/callgrind.py --only before,modegate --build before=/path/to/old/modegate

--build NAME=BIN (repeatable) measures another modegate build beside this one, on its default
engine (a before / after comparison in one run). --keep leaves the callgrind output files in
bench/work/callgrind/ (callgrind_annotate them).
"""
import argparse
import json
import os
import shutil
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
        for name, (cmd, port, e, scenarios) in cg.items():
            if only and name not in only:
                continue
            results[name] = {sc: bench.instructions_per_request(name, cmd, port, sc, args.requests, work, e, keep=args.keep)
                             for sc in scenarios}
            print(name, json.dumps(results[name]), flush=True)
    finally:
        up.terminate()
        up.wait(timeout=10)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
