# Posts callback bodies (one a line of a file) to a URL, 64 at a time, and
# prints "index status" for each (status 0: no answer).  Once `after`
# answers have come, runs `cmd` (a shell command: a kill -9, a redis-cli)
# in the background, once: the specs' load with a failure in its middle.
#   python3 post_many.py URL BODIES_FILE AFTER CMD TIMEOUT
import subprocess, sys, threading, urllib.request, urllib.error
from concurrent.futures import ThreadPoolExecutor

url, path, after, cmd, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], float(sys.argv[5])
bodies = open(path).read().splitlines()
lock, answered = threading.Lock(), [0]


def post(i):
    req = urllib.request.Request(url, data=bodies[i].encode(), headers={"Content-Type": "application/json"})
    try:
        st = urllib.request.urlopen(req, timeout=timeout).status
    except urllib.error.HTTPError as e:
        st = e.code
    except Exception:
        st = 0
    with lock:
        answered[0] += 1
        if answered[0] == after and cmd:
            subprocess.Popen(cmd, shell=True)
    return i, st


with ThreadPoolExecutor(64) as ex:
    for i, st in ex.map(post, range(len(bodies))):
        print(i + 1, st)
