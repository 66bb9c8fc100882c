#!/usr/bin/env python3
"""Test clients for the proxy tests (tests/proxy.rs); each prints one JSON object.

    netclient.py http N HOST PORT PATH   N requests, a new connection each: {"bodies": {first word: count}, "errors": [...], "peer": [host, port], "last": body}
    netclient.py refuse HOST PORT [S]    5 connects (timeout S seconds): {"errno": first errno (-1: timed out), "errnos": [...], "ms": median}
    netclient.py udp N HOST PORT         N datagrams on a connected and N on an unconnected socket:
                                         {"connected": {name: n}, "unconnected": {name: n}, "sources": [...], "errors": [...]}
    netclient.py hold HOST PORT          connects; for each line on stdin sends "who" and prints {"reply": line}
    netclient.py loop HOST PORT STOPFILE requests until STOPFILE exists: {"ok": n, "errors": [...]}
"""
import json
import os
import socket
import sys
import time


def request(host, port, path="/", timeout=5):
    with socket.create_connection((host, port), timeout=timeout) as s:
        peer = s.getpeername()
        s.sendall(b"GET %s HTTP/1.0\r\n\r\n" % path.encode())
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    body = data.split(b"\r\n\r\n", 1)[-1].decode().strip()
    return body, peer


def http(n, host, port, path):
    bodies, errors, peer, last = {}, [], None, None
    for _ in range(n):
        try:
            last, peer = request(host, port, path)
            word = last.split(" ")[0]
            bodies[word] = bodies.get(word, 0) + 1
        except OSError as e:
            errors.append(str(e))
    print(json.dumps({"bodies": bodies, "errors": errors, "peer": peer, "last": last}))


def refuse(host, port, timeout=5.0, attempts=5):
    errnos, ms = [], []
    for _ in range(attempts):
        t = time.perf_counter()
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            errnos.append(0)
        except OSError as e:
            errnos.append(e.errno if e.errno is not None else -1)
        ms.append((time.perf_counter() - t) * 1000)
    print(json.dumps({"errno": errnos[0], "errnos": errnos, "ms": sorted(ms)[len(ms) // 2], "all_ms": ms}))


def udp(n, host, port):
    out = {"connected": {}, "unconnected": {}, "sources": [], "errors": []}
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.settimeout(2)
    c.connect((host, port))
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(2)
    for i in range(n):
        for kind, sock in (("connected", c), ("unconnected", u)):
            try:
                if kind == "connected":
                    sock.send(b"ping")
                    data, src = sock.recv(2048), sock.getpeername()
                else:
                    sock.sendto(b"ping", (host, port))
                    data, src = sock.recvfrom(2048)
                name = data.decode().split(" ")[0]
                out[kind][name] = out[kind].get(name, 0) + 1
                if list(src) not in out["sources"]:
                    out["sources"].append(list(src))
            except OSError as e:
                out["errors"].append(f"{kind}: {e}")
    print(json.dumps(out))


def hold(host, port):
    s = socket.create_connection((host, port), timeout=5)
    f = s.makefile("rb")
    for _ in sys.stdin:
        s.sendall(b"who\n")
        print(json.dumps({"reply": f.readline().decode().strip()}), flush=True)


def loop(host, port, stopfile):
    ok, errors = 0, []
    while not os.path.exists(stopfile):
        try:
            request(host, port, timeout=2)
            ok += 1
        except OSError as e:
            errors.append(f"{time.time():.3f} {e}")
    print(json.dumps({"ok": ok, "errors": errors}))


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "http":
        http(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5])
    elif mode == "refuse":
        refuse(sys.argv[2], int(sys.argv[3]), *map(float, sys.argv[4:5]))
    elif mode == "udp":
        udp(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
    elif mode == "hold":
        hold(sys.argv[2], int(sys.argv[3]))
    elif mode == "loop":
        loop(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        sys.exit(f"unknown mode {mode}")
