#!/usr/bin/env python3
"""Memory per stalled reader: how much a client that requests a large response and stops
reading costs the gateway. Loopback only, bounded in time.

Starts a streaming upstream (64 MiB per response, written as fast as it is read), `modegate
serve` in front of it (body_idle_timeout_secs high enough that nothing is abandoned while we
measure), then N HTTP/1.1 clients and N h2c streams (curl at 1 byte/s) that request a response
and stop reading. RSS is read from /proc before and after; the difference over N is the cost per
stalled reader. Writes bench/stalled.md and bench/stalled.json.
"""
import argparse
import http.server
import json
import os
import shutil
import socket
import socketserver
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CHUNK = b"x" * 65536


class Big(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.send_response(200)
        self.send_header("content-type", "application/octet-stream")
        self.send_header("content-length", str(len(CHUNK) * 1024))
        self.end_headers()
        try:
            for _ in range(1024):
                self.wfile.write(CHUNK)
        except OSError:
            pass

    def log_message(self, *args):
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def wait_port(port):
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--out", default=HERE)
    args = ap.parse_args()

    up = Server(("127.0.0.1", 0), Big)
    threading.Thread(target=up.serve_forever, daemon=True).start()
    port, admin = free_port(), free_port()
    work = os.path.join(HERE, "work", "stalled")
    os.makedirs(work, exist_ok=True)
    config = os.path.join(work, "modegate.toml")
    with open(config, "w") as f:
        f.write(f"""[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin}"
body_idle_timeout_secs = 600
max_connections = 10000
[upstream]
base_url = "http://127.0.0.1:{up.server_address[1]}"
pool_max_idle_per_host = 0
[log]
level = "warn"
""")
    results = {"count": args.count}

    def start():
        gw = subprocess.Popen([args.bin, "serve", "--config", config], stderr=subprocess.DEVNULL,
                              env={**os.environ, "TOKIO_WORKER_THREADS": "1"})
        wait_port(port)
        # Warm up the allocator and the pool with one full read.
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"GET /v1/projects/p/warm HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            while s.recv(1 << 20):
                pass
        time.sleep(0.5)
        return gw

    def stop(gw):
        gw.terminate()
        gw.wait(timeout=10)

    try:
        # Each kind of reader is measured on a fresh process, so memory freed from one phase
        # does not offset the next.
        gw = start()
        before = rss_kb(gw.pid)
        stalled = []
        for _ in range(args.count):
            s = socket.create_connection(("127.0.0.1", port))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(b"GET /v1/projects/p/big HTTP/1.1\r\nHost: x\r\n\r\n")
            stalled.append(s)
        time.sleep(3)
        after = rss_kb(gw.pid)
        results["h1"] = {"rss_kb_before": before, "rss_kb_after": after,
                         "kb_per_reader": (after - before) / args.count}
        for s in stalled:
            s.close()
        stop(gw)
        if shutil.which("curl"):
            gw = start()
            n = max(1, args.count // 4)
            before = rss_kb(gw.pid)
            # One connection, n multiplexed streams, each read at 1 byte/s: the cost per stream
            # without the per-connection cost.
            url = f"http://127.0.0.1:{port}/v1/projects/p/big"
            curls = [subprocess.Popen(["curl", "-s", "--no-progress-meter", "--http2-prior-knowledge", "--parallel",
                                       "--parallel-immediate", "--parallel-max", str(n),
                                       "--limit-rate", "1"] + sum((["-o", "/dev/null", url] for _ in range(n)), []))]
            time.sleep(4)
            after = rss_kb(gw.pid)
            results["h2"] = {"streams": n, "rss_kb_before": before, "rss_kb_after": after,
                             "kb_per_stream": (after - before) / n}
            for c in curls:
                c.kill()
                c.wait()
            stop(gw)
    finally:
        up.shutdown()

    with open(os.path.join(args.out, "stalled.json"), "w") as f:
        json.dump(results, f, indent=2)
    lines = ["# Memory per stalled reader", "",
             f"{args.count} HTTP/1.1 clients each request a 64 MiB response and read nothing; then "
             "a quarter as many h2c streams on one connection read at 1 byte/s (curl --parallel). RSS of `modegate serve` "
             "(one runtime thread) before and after, from /proc. Bounds: 256 KiB per stalled "
             "HTTP/1.1 connection, 64 KiB per stalled HTTP/2 stream.", "",
             "| reader | count | RSS before | RSS after | per reader | bound | within |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    h1 = results["h1"]
    lines.append(f"| HTTP/1.1 connection | {args.count} | {h1['rss_kb_before'] / 1024:.1f} MB | "
                 f"{h1['rss_kb_after'] / 1024:.1f} MB | {h1['kb_per_reader']:.1f} KiB | 256 KiB | "
                 f"{'yes' if h1['kb_per_reader'] <= 256 else '**no**'} |")
    if "h2" in results:
        h2 = results["h2"]
        lines.append(f"| HTTP/2 stream | {h2['streams']} | {h2['rss_kb_before'] / 1024:.1f} MB | "
                     f"{h2['rss_kb_after'] / 1024:.1f} MB | {h2['kb_per_stream']:.1f} KiB | 64 KiB | "
                     f"{'yes' if h2['kb_per_stream'] <= 64 else '**no**'} |")
    with open(os.path.join(args.out, "stalled.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
