#!/usr/bin/env python3
"""A FAKE Redis server for the specs: a real redis-server cannot be made to
send what a broken or hostile one could, so this small peer answers every
command it receives with one bad reply, chosen by MODE:

  deep   a reply nested 400,000 arrays deep
  drip   "+PONG\\r\\n", one byte every 1.5 s
  huge   a bulk string announced as 4,000,000,000 bytes, then zeros
         (at most 64 MiB, then nothing, so a reader that believes the
         length is only held, not fed 4 GB)
  wide   an array announced as 4,000,000,000 elements, then ":1\r\n"s
         (at most 64 MiB of them)
  line   a simple string that never ends: "+" and 64 MiB of "x", no CRLF
  badaddr  a Sentinel's answer naming no usable address: ["127.0.0.1", "abc"]
  close  reads what comes (a whole pipeline), then closes without a word
  half   reads what comes, answers "+OK\r\n" once, then closes (a
         connection dropped part way through a pipeline's replies)
  mixed  reads what comes (a pipeline of three), answers READONLY, :1,
         READONLY: a pipeline whose second command ran between two
         refused (a real server cannot change role between two commands
         of one connection's pipeline)

Listens on 127.0.0.1, on a port the kernel picks; prints "PORT PID" and
serves until killed (the spec that started it kills it)."""
import sys
import time

import fake_server

MODE = sys.argv[1]


def serve(conn):
    try:
        conn.recv(65536)  # the command: whatever it is, the answer is bad
        if MODE == "deep":
            conn.sendall(b"*1\r\n" * 400000 + b":1\r\n")
        elif MODE == "drip":
            for b in b"+PONG\r\n":
                conn.sendall(bytes([b]))
                time.sleep(1.5)
        elif MODE == "huge":
            conn.sendall(b"$4000000000\r\n")
            zeros = b"\0" * 65536
            for _ in range(1024):
                conn.sendall(zeros)
        elif MODE == "wide":
            conn.sendall(b"*4000000000\r\n")
            ones = b":1\r\n" * 16384
            for _ in range(1024):
                conn.sendall(ones)
        elif MODE == "badaddr":
            conn.sendall(b"*2\r\n$9\r\n127.0.0.1\r\n$3\r\nabc\r\n")
        elif MODE == "line":
            conn.sendall(b"+")
            xs = b"x" * 65536
            for _ in range(1024):
                conn.sendall(xs)
        elif MODE == "close":
            return
        elif MODE == "mixed":
            ro = b"-READONLY You can't write against a read only replica.\r\n"
            conn.sendall(ro + b":1\r\n" + ro)
        elif MODE == "half":
            conn.sendall(b"+OK\r\n")
            return
        # hold the connection until the client closes it
        while conn.recv(65536):
            pass
    except OSError:
        pass
    finally:
        conn.close()


if __name__ == "__main__":
    fake_server.serve_forever(serve)
