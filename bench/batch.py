#!/usr/bin/env python3
"""Batch API benchmark: a 1,000-recipient batch send through the policy, loopback only.

Starts `modegate simulate` (Conversation and Batch origins, seeded with 1,000 contacts of a
DISPATCH app) and a gateway with a Batch listener in front of it, each pinned to its own CPU when
`taskset` exists, then alternates the same batch sent straight to the simulator's Batch origin
and through the gateway, one connection each, closed loop:

  a  rewrite off: 1,000 `identified_by` recipients (checked per recipient, forwarded unchanged)
  b  rewrite on:  1,000 `contact_id` recipients of a DISPATCH app under
     `dispatch.send.contact_recipient = "rewrite"`, contacts cached by a warm-up batch; the
     direct baseline sends the rewritten batch (what the Batch origin receives)

CPU per request is utime + stime of the gateway process over the measured requests; added
latency is gateway minus direct, per percentile. Writes bench/batch.json and the "Batch API"
section of bench/results.md. Usage:

  python3 bench/batch.py [--bin target/release/modegate] [--requests 100]
"""

import argparse
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
AUTH = "Basic YmVuY2gta2V5OmJlbmNoLXNlY3JldA=="  # bench-key:bench-secret
PROJECT = "bench-project"
APP = "dispatch-app"
N_RECIPIENTS = 1000
START, END = "<!-- batch:start -->", "<!-- batch:end -->"


def seed(path):
    lines = [
        'token_ttl_secs = 3600',
        '[[credentials]]', 'key_id = "bench-key"', 'key_secret = "bench-secret"',
        '[[projects]]', f'id = "{PROJECT}"',
        '[[projects.apps]]', f'id = "{APP}"', 'display_name = "Campaigns"',
        'created = "2025-05-02T09:30:00Z"',
    ]
    for i in range(N_RECIPIENTS):
        lines += ['[[projects.contacts]]', f'id = "c{i:04d}"',
                  f'channel_identities = [{{ channel = "SMS", identity = "+1555{i:07d}" }}]']
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def body(contacts):
    recipients = []
    for i in range(N_RECIPIENTS):
        to = ({"contact_id": f"c{i:04d}"} if contacts else
              {"identified_by": {"channel_identities": [{"channel": "SMS", "identity": f"+1555{i:07d}"}]}})
        recipients.append({"recipient": to, "parameters": {"name": f"n{i}"},
                           "message_metadata": {"segment": "s" + str(i % 7)}})
    return json.dumps({"app_id": APP, "message": {"text_message": {"text": "Hi ${name}, 20% off today"}},
                       "message_metadata": {"campaign": "winter"}, "batch_metadata": {"campaign": "winter"},
                       "recipient_and_params": recipients}).encode()


def pinned(cpu, argv):
    return (["taskset", "-c", str(cpu)] if shutil.which("taskset") else []) + argv


def listening(log, n, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        with open(log) as f:
            found = re.findall(r"listening on ([0-9.]+:[0-9]+)", f.read())
        if len(found) >= n:
            return found
        time.sleep(0.05)
    raise SystemExit(f"fewer than {n} listening lines in {log}")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def post(conn, payload):
    started = time.perf_counter()
    conn.request("POST", f"/v1/projects/{PROJECT}/messages", body=payload,
                 headers={"authorization": AUTH, "content-type": "application/json"})
    r = conn.getresponse()
    answer = r.read()
    elapsed = time.perf_counter() - started
    if r.status != 200:
        raise SystemExit(f"status {r.status}: {answer[:300]!r}")
    return elapsed, r.getheader("x-modegate-decision")


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def scenario(name, gw, direct, gw_pid, through, baseline, n):
    for _ in range(10):  # warm-up: connections, caches (the contacts of b)
        post(gw, through)
        post(direct, baseline)
    lat_gw, lat_direct, decisions = [], [], set()
    # The gateway is idle while the direct requests run: its CPU over the loop is theirs.
    before = cpu_seconds(gw_pid)
    for _ in range(n):
        lat_direct.append(post(direct, baseline)[0])
        t, decision = post(gw, through)
        lat_gw.append(t)
        decisions.add(decision)
    cpu = cpu_seconds(gw_pid) - before
    ms = lambda v: round(v * 1000, 3)
    row = {
        "scenario": name, "requests": n, "recipients": N_RECIPIENTS, "decision": sorted(decisions),
        "body_bytes": len(through),
        "gateway_cpu_ms_per_request": round(cpu / n * 1000, 3),
        "direct_ms": {p: ms(pct(lat_direct, p)) for p in (50, 99)},
        "gateway_ms": {p: ms(pct(lat_gw, p)) for p in (50, 99)},
    }
    row["added_ms"] = {p: round(row["gateway_ms"][p] - row["direct_ms"][p], 3) for p in (50, 99)}
    return row


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/modegate"))
    ap.add_argument("--requests", type=int, default=100)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="modegate-batch-bench-")
    seed(os.path.join(work, "seed.toml"))
    procs = []
    try:
        sim_log = os.path.join(work, "sim.log")
        procs.append(subprocess.Popen(
            pinned(1, [args.bin, "simulate", "--listen", "127.0.0.1:0", "--batch-listen", "127.0.0.1:0",
                       "--seed", os.path.join(work, "seed.toml")]),
            stderr=open(sim_log, "w"), stdout=subprocess.DEVNULL))
        api, batch_origin = listening(sim_log, 2)
        with open(os.path.join(work, "gw.toml"), "w") as f:
            f.write(f"""[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
batch_listen = "127.0.0.1:0"
[upstream]
base_url = "http://{api}"
batch_base_url = "http://{batch_origin}"
[policy.rules]
"dispatch.send.contact_recipient" = "rewrite"
[log]
level = "info"
""")
        gw_log = os.path.join(work, "gw.log")
        env = dict(os.environ, TOKIO_WORKER_THREADS="1")
        gw = subprocess.Popen(pinned(0, [args.bin, "serve", "--config", os.path.join(work, "gw.toml")]),
                              stderr=open(gw_log, "w"), stdout=subprocess.DEVNULL, env=env)
        procs.append(gw)
        _, _, batch_listen = listening(gw_log, 3)
        conn = lambda addr: http.client.HTTPConnection(*addr.split(":"), timeout=30)
        identified, contacts = body(False), body(True)
        rows = [
            scenario("a rewrite off (identified_by)", conn(batch_listen), conn(batch_origin), gw.pid,
                     identified, identified, args.requests),
            scenario("b rewrite on (contact_id, cached)", conn(batch_listen), conn(batch_origin), gw.pid,
                     contacts, identified, args.requests),
        ]
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)
    version = subprocess.run([args.bin, "--version"], capture_output=True, text=True).stdout.strip()
    with open(os.path.join(HERE, "batch.json"), "w") as f:
        json.dump({"version": version, "rows": rows}, f, indent=2)
    lines = [START, "", "## Batch API: a 1,000-recipient batch send through the policy (`bench/batch.py`)", "",
             f"{version}; gateway pinned to CPU 0 with one worker, `modegate simulate` (the Batch origin) on "
             f"CPU 1; {args.requests} sequential requests per scenario after 10 warm-up ones, alternating "
             "direct and through the gateway on one keep-alive connection each. Raw: `bench/batch.json`.", "",
             "| scenario | body | decision | gateway CPU ms / request | direct p50 / p99 ms | added p50 / p99 ms |",
             "| --- | ---: | --- | ---: | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['scenario']} | {r['body_bytes'] // 1024} KB | {', '.join(r['decision'])} | "
                     f"{r['gateway_cpu_ms_per_request']} | {r['direct_ms'][50]} / {r['direct_ms'][99]} | "
                     f"{r['added_ms'][50]} / {r['added_ms'][99]} |")
    lines += ["", END]
    section = "\n".join(lines)
    path = os.path.join(HERE, "results.md")
    text = open(path).read()
    if START in text:
        text = text[:text.index(START)] + section + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    with open(path, "w") as f:
        f.write(text)
    print(section)


if __name__ == "__main__":
    sys.exit(main())
