#!/usr/bin/env python3
"""Instructions per request only (callgrind; deterministic, so it can run on a busy machine):
modegate builds side by side, each behind the benchmark's upstream, on the passthrough and the
policy route. The full benchmark (bench/run.sh) measures these and much more; this is the quick
check a change to the request path is judged by.

    python3 bench/instructions.py before=/path/to/old/modegate after=target/release/modegate

Needs valgrind, nginx and oha (bench/run.sh installs them). Prints one JSON object.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench as B  # noqa: E402


def main():
    builds = [a.split("=", 1) for a in sys.argv[1:]]
    if not builds or any(len(b) != 2 for b in builds):
        raise SystemExit(__doc__)
    requests = int(os.environ.get("INSTRUCTIONS_REQUESTS", "2000"))
    work = tempfile.mkdtemp(prefix="modegate-instructions-")
    os.chmod(work, 0o777)
    ports = {k: B.free_port() for k in ("UP", "NGINX", "HAPROXY", "MG", "ADMIN")}
    subst = {"WORK": work, "PAD": "x" * 900, "MAXAPPS": "2000", **{k: str(v) for k, v in ports.items()}}

    def render(name):
        text = open(os.path.join(B.HERE, name)).read()
        for k, v in subst.items():
            text = text.replace("{{" + k + "}}", v)
        path = os.path.join(work, name.replace(".tmpl", ""))
        with open(path, "w") as f:
            f.write(text)
        return path

    up_conf, mg_conf = render("upstream.nginx.conf.tmpl"), render("modegate.toml.tmpl")
    upstream = subprocess.Popen(["taskset", "-c", B.SUPPORT_CPU, "nginx", "-p", work, "-c", up_conf, "-g", "daemon off;"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {"TOKIO_WORKER_THREADS": "1", "RUST_LOG": "warn"}
    results = {"requests": requests}
    try:
        B.wait_port(ports["UP"])
        for name, binary in builds:
            results[name] = {
                sc: B.instructions_per_request(name, [os.path.abspath(binary), "serve", "--config", mg_conf],
                                               ports["MG"], sc, requests, work, env)
                for sc in ("a_passthrough", "b_policy_send")}
            print(f"{name}: {results[name]}", file=sys.stderr, flush=True)
    finally:
        upstream.terminate()
        upstream.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
