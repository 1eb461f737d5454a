#!/usr/bin/env python3
"""A client of the Kinot open platform that never saw lua-kinot: Python's
urllib and json (a strict parser: no trailing commas) and its own
implementation of the Alibaba Cloud API Gateway signature, written from the
rule alone:

  string_to_sign = METHOD "\\n" Accept "\\n" Content-MD5 "\\n" Content-Type "\\n"
                   Date "\\n" Headers Url
  Headers: each X-Ca-* header (but X-Ca-Signature, X-Ca-Signature-Headers),
           sorted by name, "name:value\\n"; X-Ca-Signature-Headers lists them.
  Url:     the path, then "?" and the parameters sorted by name, "name=value"
           joined by "&" (the bare name when the value is empty), raw values.
  Content-MD5 = base64(MD5(body)); signature = base64(HMAC-SHA256(secret, s)).

Usage: gateway_client.py ENDPOINT APP_KEY APP_SECRET
Pages the whole fleet of locks (offset = page index from 0), fetches one
lock, sends it a command and reads the command back until it is final.
Prints one JSON document; exits non-zero on any refusal.
"""
import base64
import hashlib
import hmac
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid


def string_to_sign(method, headers, path, params):
    lines = [method]
    for name in ("Accept", "Content-MD5", "Content-Type", "Date"):
        lines.append(headers.get(name, ""))
    signed = sorted(k for k in headers if k.lower().startswith("x-ca-"))
    head = "".join("%s:%s\n" % (k, headers[k]) for k in signed)
    url = path
    if params:
        first = {}
        for k, v in params:
            if k and k not in first:
                first[k] = v
        url += "?" + "&".join(k if first[k] == "" else "%s=%s" % (k, first[k]) for k in sorted(first))
    return "\n".join(lines) + "\n" + head + url, signed


class Client:
    def __init__(self, endpoint, key, secret):
        parts = urllib.parse.urlsplit(endpoint)
        self.origin = "%s://%s" % (parts.scheme, parts.netloc)
        self.base = parts.path.rstrip("/")
        self.key, self.secret = key, secret

    def call(self, method, rel, params=(), body=None):
        path = self.base + rel
        headers = {
            "Accept": "application/json",
            "X-Ca-Key": self.key,
            "X-Ca-Timestamp": str(int(time.time() * 1000)),
            "X-Ca-Nonce": str(uuid.uuid4()),
            "X-Ca-Signature-Method": "HmacSHA256",
        }
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json; charset=UTF-8"
            headers["Content-MD5"] = base64.b64encode(hashlib.md5(data).digest()).decode()
        sts, signed = string_to_sign(method, headers, path, list(params))
        digest = hmac.new(self.secret.encode(), sts.encode(), hashlib.sha256).digest()
        headers["X-Ca-Signature"] = base64.b64encode(digest).decode()
        headers["X-Ca-Signature-Headers"] = ",".join(signed)
        query = urllib.parse.urlencode(list(params))
        url = self.origin + path + ("?" + query if query else "")
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as res:
                text = res.read().decode("utf-8")
        except urllib.error.HTTPError as e:
            raise SystemExit("%s %s: HTTP %d %s" % (method, rel, e.code, e.headers.get("X-Ca-Error-Message")))
        doc = json.loads(text)  # strict: a trailing comma raises here
        if doc.get("code") != 0:
            raise SystemExit("%s %s: code %s %s" % (method, rel, doc.get("code"), doc.get("message")))
        return doc


def main():
    endpoint, key, secret = sys.argv[1:4]
    c = Client(endpoint, key, secret)
    sns, page, count = [], 0, None
    while count is None or len(sns) < count:
        doc = c.call("GET", "/lockers", [("offset", str(page)), ("limit", "10")])
        count = doc["count"]
        if not doc["objects"]:
            break
        sns.extend(o["sn"] for o in doc["objects"])
        page += 1
    lock = c.call("GET", "/lockers/%d" % sns[-1])["objects"][0]
    sent = c.call("POST", "/commands", body={"sn": lock["sn"], "command": 1,
                                             "parameter": {"key": "handle", "value": 1}})["objects"][0]
    final = None
    for _ in range(100):
        final = c.call("GET", "/commands", [("guid", sent["guid"])])["objects"][0]
        if final["command_status"] in ("succeeded", "failed"):
            break
        time.sleep(0.05)
    print(json.dumps({"count": count, "pages": page, "sns": sns, "lock": lock, "sent": sent, "final": final}))


if __name__ == "__main__":
    main()
