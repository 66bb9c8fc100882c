#!/usr/bin/env python3
"""Test backends for the proxy tests (tests/proxy.rs): a TCP server that answers every line
(or an HTTP request) with its name and the peer it sees, and a UDP echo that does the same.

    netserver.py tcp NAME ADDR PORT
    netserver.py udp NAME ADDR PORT
"""
import socket
import sys
import threading


def tcp(name, addr, port):
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, port))
    srv.listen(512)
    print("ready", flush=True)

    def serve(conn, peer):
        with conn:
            f = conn.makefile("rb")
            for line in f:
                reply = f"{name} {peer[0]}:{peer[1]}\n".encode()
                if line.startswith(b"GET "):
                    while line not in (b"\r\n", b"\n", b""):
                        line = f.readline()
                    conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(reply) + reply)
                    return
                conn.sendall(reply)

    while True:
        conn, peer = srv.accept()
        threading.Thread(target=serve, args=(conn, peer), daemon=True).start()


def udp(name, addr, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, port))
    print("ready", flush=True)
    while True:
        data, peer = s.recvfrom(2048)
        s.sendto(f"{name} {peer[0]}:{peer[1]} {data.decode(errors='replace')}".encode(), peer)


if __name__ == "__main__":
    mode, name, addr, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    {"tcp": tcp, "udp": udp}[mode](name, addr, port)
