#!/usr/bin/env python3
"""Memory per stalled reader: how much a client that requests a large response and stops
reading costs the gateway, and what the timeouts take back. Loopback only, bounded in time.

Starts a streaming upstream (64 MiB per response, written as fast as it is read), `modegate
serve` in front of it (body_idle_timeout_secs high enough that nothing is abandoned while we
measure), then N HTTP/1.1 clients that request a response and stop reading, and N/4 and N h2c
streams on one connection that are never read. RSS is read from /proc before and after; the difference over N is the cost per
stalled reader. Then, with short timeouts: N stalled h2c streams on one connection, timed until
each is reset, and 60 connections stuck before their first request head (silent, inside the
h2c preface, before SETTINGS or HEADERS, in an HTTP/1.1 head) against max_connections = 50,
timed until each is closed while a legitimate request is sent. Writes bench/stalled.md and
bench/stalled.json.
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
        if self.path.endswith("/small"):
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"{}")
            return
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


def fmt_s(seconds):
    return "not closed" if seconds is None else f"{seconds:.2f} s"


def send_queue_bytes(port):
    """Bytes the kernel holds to send on the TCP sockets bound to local `port` (the gateway's
    side of its client connections), from /proc/net/tcp and tcp6."""
    total = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if int(fields[1].rsplit(":", 1)[1], 16) == port:
                        total += int(fields[4].split(":")[0], 16)
        except OSError:
            pass
    return total


def wait_send_queues_full(port, within=60.0):
    """Waits until the kernel's send queues towards the readers stop growing (unchanged over a
    second). They grow for seconds as the kernel enlarges each socket's send buffer, and the
    gateway's own buffers fill only after them, so RSS alone can look settled too early."""
    samples = [send_queue_bytes(port)]
    deadline = time.time() + within
    while time.time() < deadline:
        time.sleep(0.25)
        samples.append(send_queue_bytes(port))
        if len(samples) >= 5 and len(set(samples[-5:])) == 1:
            break
    return samples[-1]


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
        self.resets = {}  # stream id -> (seconds since monotonic epoch, error code)
        self.ended = set()  # streams that ended cleanly (END_STREAM)
        self.goaway = False
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
                    stream = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
                    payload, buf = buf[9:9 + length], buf[9 + length:]
                    if kind == 0x4 and not flags & 0x1:
                        self.sock.sendall(frame(0x4, 0x1, 0))  # SETTINGS ACK
                    elif kind == 0x6 and not flags & 0x1:
                        self.sock.sendall(frame(0x6, 0x1, 0, payload))  # PING ACK
                    elif kind == 0x3:  # RST_STREAM
                        self.resets[stream] = (time.monotonic(), int.from_bytes(payload[:4], "big"))
                    elif kind == 0x7:
                        self.goaway = True
                    elif kind in (0x0, 0x1) and flags & 0x1:
                        self.ended.add(stream)
        except OSError:
            return

    def close(self):
        # Shut down first: a close alone leaves the connection open while the reader thread
        # is blocked in recv on it.
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


IDLE_SECS = 2
HEAD_SECS = 2


def wait_until(check, within):
    deadline = time.monotonic() + within
    while not check() and time.monotonic() < deadline:
        time.sleep(0.02)
    return check()


def stuck_phases():
    """What a client sends before going quiet, stuck before its first request head."""
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    block = (literal(b":method", b"GET") + literal(b":scheme", b"http")
             + literal(b":path", b"/v1/projects/p/small") + literal(b":authority", b"bench"))
    headers = frame(0x1, 0x5, 1, block)
    return [b"", b"PRI * HTTP", preface, preface + frame(0x4, 0, 0),
            preface + frame(0x4, 0, 0) + headers[:12],
            b"GET /v1/projects/p/small HTTP/1.1\r\nHost: x\r\n"]


class Stuck:
    """A connection that sends `prefix` and goes quiet; notes when the gateway closes it."""

    def __init__(self, port, prefix):
        self.closed_at = None
        self.sock = socket.create_connection(("127.0.0.1", port))
        if prefix:
            self.sock.sendall(prefix)
        threading.Thread(target=self.wait, daemon=True).start()

    def wait(self):
        try:
            while self.sock.recv(4096):
                pass
        except OSError:
            pass
        self.closed_at = time.monotonic()

    def close(self):
        # Shut down first: a close alone leaves the connection open while the reader thread
        # is blocked in recv on it.
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def timed_get(port, path):
    """A plain HTTP/1.1 GET; its status (0 when there was no answer within 20 s)."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        try:
            head = s.recv(64)
        except OSError:
            return 0
    parts = head.split(b" ")
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def scrape(admin, series):
    """One sample from the admin /metrics text (0 when absent)."""
    with socket.create_connection(("127.0.0.1", admin), timeout=5) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        text = b""
        while True:
            data = s.recv(1 << 16)
            if not data:
                break
            text += data
    for line in text.decode(errors="replace").splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


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

    def write_config(body_idle=600, header_read=10, max_connections=10000):
        with open(config, "w") as f:
            f.write(f"""[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin}"
body_idle_timeout_secs = {body_idle}
header_read_timeout_secs = {header_read}
max_connections = {max_connections}
[upstream]
base_url = "http://127.0.0.1:{up.server_address[1]}"
pool_max_idle_per_host = 0
[log]
level = "warn"
""")

    write_config()
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
        kernel = wait_send_queues_full(port)
        after = settled_kb(lambda: rss_kb(gw.pid))
        results["h1"] = {"answered": served - base, "rss_kb_before": before, "rss_kb_after": after,
                         "kb_per_reader": (after - before) / args.count,
                         "kernel_send_queues_mb": kernel / (1 << 20)}
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
        # What the timeouts take back, with short ones: stalled h2 streams reset, and
        # connections stuck before a request head closed, their slots freed.
        write_config(body_idle=IDLE_SECS, header_read=HEAD_SECS, max_connections=50)
        gw = start()
        base = Big.served
        before = rss_kb(gw.pid)
        conn = StalledH2(port, args.count)
        served = wait_served(base + args.count)
        answered_at = time.monotonic()
        stalled_kb = rss_kb(gw.pid)
        deadline = answered_at + IDLE_SECS + 10
        while len(conn.resets) < args.count and time.monotonic() < deadline:
            time.sleep(0.05)
        resets = list(conn.resets.values())
        last_reset = max((t for t, _ in resets), default=deadline) - answered_at
        cancel = sum(1 for _, code in resets if code == 0x8)
        # The connection serves on: one more stream, answered in full.
        ask = frame(0x1, 0x5, 1 + 2 * args.count, literal(b":method", b"GET")
                    + literal(b":scheme", b"http") + literal(b":path", b"/v1/projects/p/small")
                    + literal(b":authority", b"bench"))
        conn.sock.sendall(ask)
        wait_until(lambda: 1 + 2 * args.count in conn.ended, 5)
        after = settled_kb(lambda: rss_kb(gw.pid))
        results["h2_reset"] = {
            "streams": args.count, "answered": served - base, "body_idle_timeout_secs": IDLE_SECS,
            "reset": len(resets), "reset_cancel": cancel,
            "last_reset_after_answers_s": last_reset,
            "next_stream_answered": 1 + 2 * args.count in conn.ended, "goaway": conn.goaway,
            "rss_kb_before": before, "rss_kb_stalled": stalled_kb, "rss_kb_after": after}
        conn.close()
        # 60 connections stuck before a request head against 50 slots, and a legitimate GET.
        phases = stuck_phases()
        started = time.monotonic()
        stuck = [Stuck(port, phases[i % len(phases)]) for i in range(60)]
        legit = timed_get(port, b"/v1/projects/p/small")
        legit_at = time.monotonic() - started
        wait_until(lambda: all(s.closed_at for s in stuck), 2 * HEAD_SECS + 10)
        closed = [s.closed_at - started if s.closed_at else None for s in stuck]
        counted = scrape(admin, 'modegate_connections_closed_total{reason="header_timeout"}')
        results["stuck"] = {
            "connections": len(stuck), "max_connections": 50,
            "header_read_timeout_secs": HEAD_SECS,
            "legit_status": legit, "legit_answered_s": legit_at,
            "closed": sum(1 for c in closed if c is not None),
            "first_50_closed_by_s": max((c for c in closed[:50] if c is not None), default=None),
            "last_10_closed_by_s": max((c for c in closed[50:] if c is not None), default=None),
            "counted_header_timeout": counted}
        for s in stuck:
            s.close()
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
             "full: under 64 KiB of change over a second; for HTTP/1.1, only once the kernel's "
             "send queues towards the readers have stopped growing too, "
             f"{results['h1']['kernel_send_queues_mb']:.0f} MB in all, since the gateway's own "
             "buffers fill after them), from /proc. Bounds: 256 KiB per stalled "
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
    r, st = results["h2_reset"], results["stuck"]
    lines += ["", "## What the timeouts take back", "",
              f"{r['streams']} h2c streams on one connection, never read, with "
              f"`body_idle_timeout_secs = {r['body_idle_timeout_secs']}`; then {st['connections']} "
              "connections that each stop before their first request head (silent, 10 bytes of "
              "the h2c preface, the preface without SETTINGS, the preface and SETTINGS, part of "
              "the first HEADERS frame, part of an HTTP/1.1 head; in turn) against "
              f"`max_connections = {st['max_connections']}` and `header_read_timeout_secs = "
              f"{st['header_read_timeout_secs']}`, with a legitimate GET sent after them. Times "
              "are from the last stalled stream's answer and from the first stuck connect; RSS "
              "after the resets is what the allocator has given back by then (it may keep freed "
              "pages for reuse).", "",
              "| what | measured |", "| --- | --- |",
              f"| stalled streams reset | {r['reset']} of {r['streams']}, "
              f"{r['reset_cancel']} with CANCEL |",
              f"| last reset, after the last stream was answered | {r['last_reset_after_answers_s']:.2f} s |",
              f"| the connection afterwards | "
              f"{'a new stream answered in full' if r['next_stream_answered'] else '**no answer**'}"
              f"{', GOAWAY' if r['goaway'] else ', no GOAWAY'} |",
              f"| RSS before, stalled, after the resets | {r['rss_kb_before'] / 1024:.1f} / "
              f"{r['rss_kb_stalled'] / 1024:.1f} / {r['rss_kb_after'] / 1024:.1f} MB |",
              f"| stuck connections closed | {st['closed']} of {st['connections']}; counted "
              f"`header_timeout`: {st['counted_header_timeout']:.0f} |",
              f"| the 50 that got a slot, all closed by | {fmt_s(st['first_50_closed_by_s'])} |",
              f"| the 10 over the limit (they wait in the accept backlog for a slot first), all closed by | "
              f"{fmt_s(st['last_10_closed_by_s'])} |",
              f"| the legitimate GET | {st['legit_status']} after {st['legit_answered_s']:.2f} s |"]
    with open(os.path.join(args.out, "stalled.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
