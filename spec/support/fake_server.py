"""What the specs' FAKE peers share (drip_proxy.py, redis_hostile.py):
listen on 127.0.0.1, on a port the kernel picks, print "PORT PID" (the
spec reads both: spec/support/helpers.lua, H.fake) and serve each
connection in a thread of its own until killed (the spec that started the
peer kills it)."""
import os
import socket
import threading


def serve_forever(serve):
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    print(srv.getsockname()[1], os.getpid(), flush=True)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()
