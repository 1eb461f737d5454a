#!/usr/bin/env python3
"""A slow link in front of a real server, for the specs: every connection
is forwarded to 127.0.0.1:UPSTREAM, the client's bytes at once, the
server's bytes one at a time, 0.2 s apart, from the moment given by MODE:

  handshake  from the first byte: a TLS handshake that drips
  later      after the connection's first 0.5 s at full speed: the
             handshake and a first command go through, a later reply drips

What it forwards is the real server's (a real redis-server's TLS); only
the pace is this proxy's.  Listens on 127.0.0.1, on a port the kernel
picks; prints "PORT PID" and serves until killed (the spec that started
it kills it)."""
import socket
import sys
import threading
import time

import fake_server

UPSTREAM = int(sys.argv[1])
MODE = sys.argv[2]


def pump(src, dst, slow_after):
    start = time.monotonic()
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            if slow_after is None or time.monotonic() - start < slow_after:
                dst.sendall(data)
            else:
                for b in data:
                    dst.sendall(bytes([b]))
                    time.sleep(0.2)
    except OSError:
        pass
    for s in (src, dst):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def serve(client):
    up = socket.create_connection(("127.0.0.1", UPSTREAM))
    slow_after = 0 if MODE == "handshake" else 0.5
    threading.Thread(target=pump, args=(client, up, None), daemon=True).start()
    threading.Thread(target=pump, args=(up, client, slow_after), daemon=True).start()


fake_server.serve_forever(serve)
