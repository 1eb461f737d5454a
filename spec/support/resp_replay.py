#!/usr/bin/env python3
"""A FAKE Redis for the RESP reader's fuzz (spec/redis_resp_fuzz_spec.lua):
a real redis-server cannot be made to send an arbitrary reply, nor send one
cut into chosen pieces.  argv: a file of replies (each "LEN\\n" then LEN
bytes), a seed.  Serves one connection at a time; each command read (one
recv: the client sends one small command and waits) is answered with the
next reply of the file, cut at random (whole; pieces of 1 to 4096 bytes
with pauses between them so that they reach the client as separate reads;
or, for small replies, one byte at a time).  A reply starting "CLOSE:" is
sent without that mark, whole, and the connection is closed after it.  Listens on 127.0.0.1 on a
port the kernel picks; prints "PORT PID" and serves until killed."""
import os
import random
import socket
import sys
import time

path, seed = sys.argv[1], int(sys.argv[2])
data = open(path, "rb").read()
replies, at = [], 0
while at < len(data):
    nl = data.index(b"\n", at)
    n = int(data[at:nl])
    replies.append(data[nl + 1:nl + 1 + n])
    at = nl + 1 + n
rng = random.Random(seed)
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 0))
srv.listen(8)
print(srv.getsockname()[1], os.getpid(), flush=True)
k = 0
while True:
    conn, _ = srv.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        while conn.recv(65536):
            r = replies[k % len(replies)]
            k += 1
            if r.startswith(b"CLOSE:"):
                conn.sendall(r[6:])
                break
            how = rng.random()
            if how < 0.3:
                conn.sendall(r)
            elif how < 0.45 and len(r) < 400:
                for i in range(len(r)):
                    conn.sendall(r[i:i + 1])
                    time.sleep(0.0003)
            else:
                i = 0
                while i < len(r):
                    j = i + rng.randint(1, rng.choice([3, 17, 300, 4096]))
                    conn.sendall(r[i:j])
                    i = j
                    if rng.random() < 0.5:
                        time.sleep(0.0003)
    except OSError:
        pass
    conn.close()
