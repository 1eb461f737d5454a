#!/usr/bin/env python3
"""A stand-in for a `kinot serve` that answers hostile JSON (a real kinot
serve never would: this is the one place a fake is needed).  Usage:
serve_hostile.py PORT BODY_FILE: every GET answers 200 with BODY_FILE's
bytes, read again at each request (a spec rewrites it between runs), as
application/json.  Listens on 127.0.0.1 only; prints "ready" when it does."""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        with open(sys.argv[2], "rb") as f:
            body = f.read()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
print("ready", flush=True)
server.serve_forever()
