#!/usr/bin/env python3
"""Soak: mixed traffic through modegate into the simulator with fault injection, for N minutes.
Samples modegate's RSS and open file descriptors every 10 s and counts every request's answer.
Writes bench/soak.md and bench/soak.json (or bench/work/soak/ with --minutes < 10)."""
import argparse
import http.client
import json
import os
import random
import re
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

SEED = """
token_ttl_secs = 3600
[[credentials]]
key_id = "soak-key"
key_secret = "soak-secret"
[[projects]]
id = "soak"
[[projects.apps]]
id = "dispatch-app"
created = "2025-06-01T00:00:00Z"
[[projects.apps]]
id = "legacy-app"
created = "2024-01-01T00:00:00Z"
[[projects.contacts]]
id = "alice"
channel_identities = [{ channel = "SMS", identity = "+15550100" }]
[faults]
failure_ratio = 0.02
rate_limit_ratio = 0.01
[faults.operations.get_app]
failure_ratio = 0.2
latency_ms = 2
[faults.operations.send_message]
latency_ms = 1
failure_ratio = 0.02
"""

AUTH = "Basic c29hay1rZXk6c29hay1zZWNyZXQ="  # soak-key:soak-secret


def listening(log, nth, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        with open(log) as f:
            addrs = re.findall(r"listening on ([0-9.]+:[0-9]+)", f.read())
        if len(addrs) >= nth:
            return addrs[nth - 1]
        time.sleep(0.1)
    raise SystemExit(f"no listening line {nth} in {log}")


def requests_mix():
    body_ok = json.dumps({"app_id": "dispatch-app", "recipient": {"identified_by": {"channel_identities": [
        {"channel": "SMS", "identity": "+15550100"}]}}, "message": {"text_message": {"text": "soak"}}})
    body_contact = json.dumps({"app_id": "dispatch-app", "recipient": {"contact_id": "alice"},
                               "message": {"text_message": {"text": "soak"}}})
    body_legacy = body_contact.replace("dispatch-app", "legacy-app")
    p = "/v1/projects/soak"
    return [
        ("POST", f"{p}/messages:send", body_ok),
        ("POST", f"{p}/messages:send", body_contact),      # rewritten (contact lookup)
        ("POST", f"{p}/messages:send", body_legacy),       # forwarded, what-if blocker
        ("GET", f"{p}/messages?app_id=dispatch-app&contact_id=alice", None),  # rejected
        ("GET", f"{p}/messages?app_id=dispatch-app", None),  # rewritten
        ("GET", f"{p}/apps/legacy-app", None),               # learned
        ("GET", f"{p}/conversations?app_id=legacy-app", None),
        ("POST", f"{p}/messages:send", "{not json"),       # 400 from the gateway
        ("GET", f"{p}/elsewhere", None),                    # other
    ]


def worker(addr, stop, stats, lock):
    host, port = addr.rsplit(":", 1)
    mix = requests_mix()
    conn = None
    while not stop.is_set():
        method, path, body = random.choice(mix)
        headers = {"Authorization": AUTH}
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            if conn is None:
                conn = http.client.HTTPConnection(host, int(port), timeout=10)
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            key = str(resp.status)
            if resp.getheader("connection", "").lower() == "close":
                conn.close()
                conn = None
        except (OSError, http.client.HTTPException) as e:
            key = "unanswered"
            with lock:
                stats.setdefault("errors", []).append(type(e).__name__) if len(stats.get("errors", [])) < 20 else None
            if conn is not None:
                conn.close()
            conn = None
        with lock:
            stats[key] = stats.get(key, 0) + 1
        time.sleep(0.002)


def sample(pid):
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "modegate"))
    ap.add_argument("--threads", type=int, default=8)
    args = ap.parse_args()
    work = os.path.join(HERE, "work", "soak")
    os.makedirs(work, exist_ok=True)
    seed = os.path.join(work, "soak-seed.toml")
    open(seed, "w").write(SEED)
    sim_log, gw_log = os.path.join(work, "soak-sim.log"), os.path.join(work, "soak-gw.log")
    sim = subprocess.Popen([args.bin, "simulate", "--listen", "127.0.0.1:0", "--seed", seed],
                           stdout=open(sim_log, "w"), stderr=subprocess.STDOUT)
    sim_addr = listening(sim_log, 1)
    conf = os.path.join(work, "soak.toml")
    open(conf, "w").write(f"""
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
[upstream]
base_url = "http://{sim_addr}"
request_timeout_ms = 5000
[mode_cache]
ttl_secs = 5
stale_if_error_secs = 600
[policy]
what_if_mode = "DISPATCH"
[policy.rules]
"dispatch.send.contact_recipient" = "rewrite"
[log]
format = "json"
level = "warn,modegate::server=info"
""")
    gw = subprocess.Popen([args.bin, "serve", "--config", conf], stdout=open(gw_log, "w"), stderr=subprocess.STDOUT)
    try:
        addr = listening(gw_log, 1)
        stats, lock, stop = {}, threading.Lock(), threading.Event()
        threads = [threading.Thread(target=worker, args=(addr, stop, stats, lock), daemon=True) for _ in range(args.threads)]
        for t in threads:
            t.start()
        samples = []
        started = time.time()
        end = started + args.minutes * 60
        while time.time() < end:
            rss, fds = sample(gw.pid)
            with lock:
                total = sum(v for k, v in stats.items() if k != "errors")
            samples.append({"t": round(time.time() - started), "rss_kb": rss, "fds": fds, "requests": total})
            time.sleep(min(10, max(0.5, end - time.time())))
        stop.set()
        for t in threads:
            t.join(timeout=15)
        rss, fds = sample(gw.pid)
        samples.append({"t": round(time.time() - started), "rss_kb": rss, "fds": fds,
                        "requests": sum(v for k, v in stats.items() if k != "errors")})
    finally:
        gw.terminate()
        sim.terminate()
        gw.wait(timeout=30)
        sim.wait(timeout=30)
    by_status = {k: v for k, v in sorted(stats.items()) if k != "errors"}
    total = sum(by_status.values())
    warm = [s for s in samples if s["t"] >= 60] or samples
    result = {
        "minutes": args.minutes, "threads": args.threads, "requests": total,
        "unanswered": by_status.get("unanswered", 0), "by_status": by_status,
        "errors": stats.get("errors", []),
        "rss_kb": {"first": samples[0]["rss_kb"], "after_warmup_min": min(s["rss_kb"] for s in warm),
                   "after_warmup_max": max(s["rss_kb"] for s in warm), "last": samples[-1]["rss_kb"]},
        "fds": {"first": samples[0]["fds"], "min": min(s["fds"] for s in samples),
                "max": max(s["fds"] for s in samples), "last": samples[-1]["fds"]},
        "samples": samples,
    }
    out = HERE if args.minutes >= 10 else work
    json.dump(result, open(os.path.join(out, "soak.json"), "w"), indent=2)
    md = [
        "# modegate soak", "",
        f"- {args.minutes:g} minutes of mixed traffic ({args.threads} keep-alive clients) through `modegate serve` "
        "into `modegate simulate` with faults: 2% of calls 503, 1% 429, 20% of app lookups 503 (+2 ms), sends +1 ms.",
        "- Mix: sends by identified_by and by contact_id (rewritten), legacy sends (what-if blockers), rejected and "
        "rewritten message lists, app reads, conversations, malformed JSON, unknown paths. Mode cache TTL 5 s.",
        "", f"- Requests: {total}; unanswered (no HTTP response at all): **{result['unanswered']}**",
        "- By status: " + ", ".join(f"{k}: {v}" for k, v in by_status.items()),
        f"- RSS: {result['rss_kb']['first'] / 1024:.1f} MB at start; after the first minute between "
        f"{result['rss_kb']['after_warmup_min'] / 1024:.1f} and {result['rss_kb']['after_warmup_max'] / 1024:.1f} MB; "
        f"{result['rss_kb']['last'] / 1024:.1f} MB at the end",
        f"- Open file descriptors: {result['fds']['first']} at start, between {result['fds']['min']} and "
        f"{result['fds']['max']}, {result['fds']['last']} at the end",
        "", "| t (s) | requests | RSS (MB) | FDs |", "| ---: | ---: | ---: | ---: |",
    ] + [f"| {s['t']} | {s['requests']} | {s['rss_kb'] / 1024:.1f} | {s['fds']} |" for s in samples]
    open(os.path.join(out, "soak.md"), "w").write("\n".join(md) + "\n")
    print("\n".join(md[:9]))
    sys.exit(0 if result["unanswered"] == 0 else 1)


if __name__ == "__main__":
    main()
