"""Opens N keep-alive connections to a server, makes one request on each, and holds them idle
for --hold seconds. Prints how many connections answered.

By default each connection reads its answer before the next one opens: N idle clients, whose
requests never overlapped. With --together every request is sent before any answer is read,
so the server has up to N requests in flight at once (and opens upstream connections to
match, which its pool may keep)."""
import argparse
import socket
import sys
import time

parser = argparse.ArgumentParser()
parser.add_argument("--addr", required=True)
parser.add_argument("--count", type=int, default=1000)
parser.add_argument("--path", default="/v1/projects/bench/other/path")
parser.add_argument("--hold", type=float, default=5.0)
parser.add_argument("--together", action="store_true", help="send every request before reading any answer")
args = parser.parse_args()
host, port = args.addr.rsplit(":", 1)
request = f"GET {args.path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer bench-token\r\n\r\n".encode()
conns = []
answered = 0


def answer(s):
    s.settimeout(10)
    return 1 if s.recv(65536).startswith(b"HTTP/1.1 200") else 0


for _ in range(args.count):
    s = socket.create_connection((host, int(port)))
    s.sendall(request)
    conns.append(s)
    if not args.together:
        answered += answer(s)
if args.together:
    answered = sum(answer(s) for s in conns)
print(f"idle connections answered: {answered}", flush=True)
time.sleep(args.hold)
for s in conns:
    s.close()
sys.exit(0 if answered == args.count else 1)
