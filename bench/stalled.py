#!/usr/bin/env python3
"""Memory per stalled reader: how much a client that requests a large response and stops
reading costs the gateway. Loopback only, bounded in time.

Starts a streaming upstream (64 MiB per response, written as fast as it is read), `modegate
serve` in front of it (body_idle_timeout_secs high enough that nothing is abandoned while we
measure), then N HTTP/1.1 clients that request a response and stop reading, and N/4 and N h2c
streams on one connection that are never read. RSS is read from /proc before and after; the difference over N is the cost per
stalled reader. Writes bench/stalled.md and bench/stalled.json.
"""
import argparse
import http.server
import json
import os
import socket
import socketserver
import subprocess
import sys
import threading
import time

from bench import settled_kb

HERE = os.path.dirname(os.path.abspath(__file__))
CHUNK = b"x" * 65536


class Big(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    served = 0
    lock = threading.Lock()

    def do_GET(self):
        with Big.lock:
            Big.served += 1
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
    # Every reader's upstream connection is accepted at once (the default backlog is 5).
    request_queue_size = 4096


def wait_served(count):
    """Waits (at most 30 s) until the upstream has started `count` responses."""
    deadline = time.time() + 30
    while time.time() < deadline:
        with Big.lock:
            if Big.served >= count:
                break
        time.sleep(0.05)
    with Big.lock:
        return Big.served


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


def frame(kind, flags, stream, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def literal(name, value):
    """An HPACK header field without indexing, new name, no Huffman (RFC 7541 6.2.2)."""
    assert len(name) < 127 and len(value) < 127
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


class StalledH2:
    """An h2c client that opens n streams on one connection and never reads them: each stream
    keeps the default 64 KiB window, which it never replenishes, while the connection's window
    is opened wide and its frames are read (and dropped), so only the streams stall. Written
    against RFC 9113 directly, so the benchmark needs no HTTP/2 library."""

    def __init__(self, port, n, path=b"/v1/projects/p/big"):
        self.sock = socket.create_connection(("127.0.0.1", port))
        out = [b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", frame(0x4, 0, 0),
               frame(0x8, 0, 0, (1 << 30).to_bytes(4, "big"))]
        block = (literal(b":method", b"GET") + literal(b":scheme", b"http")
                 + literal(b":path", path) + literal(b":authority", b"bench"))
        for i in range(n):
            out.append(frame(0x1, 0x5, 1 + 2 * i, block))  # END_STREAM | END_HEADERS
        self.sock.sendall(b"".join(out))
        self.reader = threading.Thread(target=self.read, daemon=True)
        self.reader.start()

    def read(self):
        buf = b""
        try:
            while True:
                data = self.sock.recv(1 << 16)
                if not data:
                    return
                buf += data
                while len(buf) >= 9:
                    length = int.from_bytes(buf[:3], "big")
                    if len(buf) < 9 + length:
                        break
                    kind, flags = buf[3], buf[4]
                    payload, buf = buf[9:9 + length], buf[9 + length:]
                    if kind == 0x4 and not flags & 0x1:
                        self.sock.sendall(frame(0x4, 0x1, 0))  # SETTINGS ACK
                    elif kind == 0x6 and not flags & 0x1:
                        self.sock.sendall(frame(0x6, 0x1, 0, payload))  # PING ACK
        except OSError:
            return

    def close(self):
        self.sock.close()


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
        base = Big.served
        before = rss_kb(gw.pid)
        stalled = []
        for _ in range(args.count):
            s = socket.create_connection(("127.0.0.1", port))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(b"GET /v1/projects/p/big HTTP/1.1\r\nHost: x\r\n\r\n")
            stalled.append(s)
        served = wait_served(base + args.count)
        after = settled_kb(lambda: rss_kb(gw.pid))
        results["h1"] = {"answered": served - base, "rss_kb_before": before, "rss_kb_after": after,
                         "kb_per_reader": (after - before) / args.count}
        for s in stalled:
            s.close()
        stop(gw)
        # One connection, n multiplexed streams that are never read: the cost per stream
        # without the per-connection cost; at a quarter of the HTTP/1.1 count and at the full
        # count, each on a fresh process, since the allocator's slack shows only at scale.
        results["h2"] = []
        for n in sorted({max(1, args.count // 4), args.count}):
            gw = start()
            base = Big.served
            before = rss_kb(gw.pid)
            conn = StalledH2(port, n)
            served = wait_served(base + n)
            after = settled_kb(lambda: rss_kb(gw.pid))
            results["h2"].append({"streams": n, "answered": served - base,
                                  "rss_kb_before": before, "rss_kb_after": after,
                                  "kb_per_stream": (after - before) / n})
            conn.close()
            stop(gw)
    finally:
        up.shutdown()

    with open(os.path.join(args.out, "stalled.json"), "w") as f:
        json.dump(results, f, indent=2)
    lines = ["# Memory per stalled reader", "",
             f"{args.count} HTTP/1.1 clients each request a 64 MiB response and read nothing; then "
             "h2c streams on one connection that are never read (each keeps its default 64 KiB "
             "window, never replenished; the connection reads on), a quarter as many and as many, "
             "each count on a fresh process. RSS of `modegate serve` "
             "(one runtime thread) before, and after once it has settled (every reader's buffers "
             "full: under 64 KiB of change over a second), from /proc. Bounds: 256 KiB per stalled "
             "HTTP/1.1 connection, 64 KiB per stalled HTTP/2 stream.", "",
             "| reader | count | RSS before | RSS after | per reader | bound | within |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    h1 = results["h1"]
    lines.append(f"| HTTP/1.1 connection | {args.count} | {h1['rss_kb_before'] / 1024:.1f} MB | "
                 f"{h1['rss_kb_after'] / 1024:.1f} MB | {h1['kb_per_reader']:.1f} KiB | 256 KiB | "
                 f"{'yes' if h1['kb_per_reader'] <= 256 else '**no**'} |")
    for h2 in results["h2"]:
        lines.append(f"| HTTP/2 stream | {h2['streams']} | {h2['rss_kb_before'] / 1024:.1f} MB | "
                     f"{h2['rss_kb_after'] / 1024:.1f} MB | {h2['kb_per_stream']:.1f} KiB | 64 KiB | "
                     f"{'yes' if h2['kb_per_stream'] <= 64 else '**no**'} |")
    with open(os.path.join(args.out, "stalled.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
