#!/usr/bin/env python3
"""How much abandoned work delays the next request, against a running server.

    tools/load/abandoned.py <port> <bomb file> <normal file> [abandoned count]

Times a normal request on the idle server, then sends <abandoned count> (default 2) copies of
the bomb, each whole, waits until /healthz shows them admitted plus half a second (they are
being decoded), closes their connections, and times the normal request again. Prints both
times and the server's CPU seconds meanwhile is up to the caller (`/proc/<pid>/stat`).
Standard library only.
"""
import http.client
import json
import socket
import sys
import time


def classify(port, body):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    started = time.monotonic()
    conn.request("POST", "/classify", body, {"Content-Type": "application/octet-stream"})
    response = conn.getresponse()
    response.read()
    conn.close()
    return response.status, time.monotonic() - started


def admitted(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", "/healthz")
    value = json.loads(conn.getresponse().read())["admitted"]
    conn.close()
    return value


def main():
    port, bomb_path, normal_path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    count = int(sys.argv[4]) if len(sys.argv) > 4 else 2
    bomb = open(bomb_path, "rb").read()
    normal = open(normal_path, "rb").read()
    classify(port, normal)
    status, idle = classify(port, normal)
    print(f"idle: {status} in {idle:.3f} s")
    head = (f"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: {len(bomb)}\r\n\r\n").encode()
    sockets = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(head + bomb)
        sockets.append(s)
    deadline = time.monotonic() + 60
    while admitted(port) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.5)
    for s in sockets:
        s.close()
    status, after = classify(port, normal)
    print(f"after {count} abandoned bombs: {status} in {after:.3f} s")


if __name__ == "__main__":
    main()
