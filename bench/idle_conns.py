"""Opens N keep-alive connections to a server, makes one request on each, and holds them idle
until stdin closes (or for --hold seconds). Prints how many connections answered."""
import argparse
import socket
import sys
import time

parser = argparse.ArgumentParser()
parser.add_argument("--addr", required=True)
parser.add_argument("--count", type=int, default=1000)
parser.add_argument("--path", default="/v1/projects/bench/other/path")
parser.add_argument("--hold", type=float, default=5.0)
args = parser.parse_args()
host, port = args.addr.rsplit(":", 1)
request = f"GET {args.path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer bench-token\r\n\r\n".encode()
conns = []
for _ in range(args.count):
    s = socket.create_connection((host, int(port)))
    s.sendall(request)
    conns.append(s)
answered = 0
for s in conns:
    s.settimeout(10)
    data = s.recv(65536)
    if data.startswith(b"HTTP/1.1 200"):
        answered += 1
print(f"idle connections answered: {answered}", flush=True)
time.sleep(args.hold)
for s in conns:
    s.close()
sys.exit(0 if answered == args.count else 1)
