#!/usr/bin/python3
"""Generate the SigV4 test vectors embedded in tests/unit/http/sigv4.c.

Not run by the build: run it by hand when the vectors need regenerating,
then paste its C output into test_sigv4.c (between the GENERATED markers)
and copy the wire files into the fuzz corpus:

    /usr/bin/python3 tests/unit/http/gen_sigv4_vectors.py \
        --corpus tests/fuzz/corpus/fuzz_sigv4 > /tmp/vectors.c

Needs Debian's python3-boto3 (botocore). Every request is signed by
unmodified botocore with Credentials('AKIDTEST', 'secretTEST'), region
us-east-1, service execute-api, at the fixed time 2024-03-05T06:07:08Z
(botocore.auth's clock is monkeypatched; nothing else is).

Two kinds of vectors:

* "client" vectors: a real boto3 apigatewaymanagementapi client
  (endpoint_url http://127.0.0.1:PORT/staging) sends post_to_connection,
  get_connection and delete_connection to a socket server in this process,
  which records the exact bytes received on the wire.
* "signer" vectors: botocore.auth.SigV4Auth.add_auth signs an AWSRequest
  directly, for shapes the management API client never sends (a query
  string, dot segments and doubled slashes, a query in a non-canonical
  encoding, a session token, the Date header instead of X-Amz-Date); the wire text is rebuilt from the signed
  request (request line from the URL as given, headers in order, body).

It also prints botocore's canonical URI and canonical query string for a
few awkward inputs, which test_sigv4.c compares with sigv4_canonical_uri()
and sigv4_canonical_query().
"""
import argparse
import datetime
import os
import socket
import sys
import threading
import types
from urllib.parse import unquote, urlsplit

import boto3
import botocore.auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

FIXED = datetime.datetime(2024, 3, 5, 6, 7, 8)


class _FixedDateTime(datetime.datetime):
    @classmethod
    def utcnow(cls):
        return FIXED

    @classmethod
    def now(cls, tz=None):
        if tz is None:
            return FIXED
        return FIXED.replace(tzinfo=datetime.timezone.utc).astimezone(tz)


# botocore.auth does `import datetime` and calls datetime.datetime.utcnow().
botocore.auth.datetime = types.SimpleNamespace(
    datetime=_FixedDateTime,
    timezone=datetime.timezone,
    timedelta=datetime.timedelta,
)


def capture_server(port, results, count):
    """Accept `count` connections, record each raw request, answer it."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(4)

    def loop():
        for _ in range(count):
            conn, _addr = srv.accept()
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            while len(body) < length:
                body += conn.recv(65536)
            results.append(head + b"\r\n\r\n" + body)
            method = head.split(b" ", 1)[0]
            if method == b"GET":
                payload = (b'{"ConnectedAt":"2024-03-05T06:00:00Z",'
                           b'"Identity":{"SourceIp":"127.0.0.1"},'
                           b'"LastActiveAt":"2024-03-05T06:07:00Z"}')
                resp = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(payload)
                        + payload)
            elif method == b"DELETE":
                resp = b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"
            else:
                resp = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            conn.sendall(resp)
            conn.close()
        srv.close()

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    return t


def client_vectors(port):
    wire = []
    t = capture_server(port, wire, 3)
    client = boto3.client(
        "apigatewaymanagementapi",
        endpoint_url="http://127.0.0.1:%d/staging" % port,
        region_name="us-east-1",
        aws_access_key_id="AKIDTEST",
        aws_secret_access_key="secretTEST",
    )
    client.post_to_connection(ConnectionId="abc=", Data=b'{"action":"sendmessage","text":"hi @all"}')
    client.get_connection(ConnectionId="abc=")
    client.delete_connection(ConnectionId="abc=")
    t.join(10)
    return [("boto3_post", wire[0]), ("boto3_get", wire[1]), ("boto3_delete", wire[2])]


def signer_vector(name, method, url, headers, body=b"", token=None):
    creds = Credentials("AKIDTEST", "secretTEST", token)
    req = AWSRequest(method=method, url=url, headers=headers, data=body)
    botocore.auth.SigV4Auth(creds, "execute-api", "us-east-1").add_auth(req)
    parts = urlsplit(url)
    target = parts.path + ("?" + parts.query if parts.query else "")
    lines = ["%s %s HTTP/1.1" % (method, target), "Host: %s" % parts.netloc]
    for k, v in req.headers.items():
        lines.append("%s: %s" % (k, v))
    if body:
        lines.append("Content-Length: %d" % len(body))
    return (name, ("\r\n".join(lines) + "\r\n\r\n").encode() + body)


def c_string(b):
    s = ""
    for ch in b:
        c = chr(ch)
        if c == "\r":
            s += "\\r"
        elif c == "\n":
            s += "\\n\"\n    \""
        elif c == '"' or c == "\\":
            s += "\\" + c
        elif 0x20 <= ch < 0x7F:
            s += c
        else:
            s += "\\x%02x\"\"" % ch
    return '"' + s + '"'


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=47211)
    ap.add_argument("--corpus", help="directory to write the wire requests into")
    args = ap.parse_args()

    vectors = client_vectors(args.port)
    vectors.append(signer_vector(
        "signer_query", "GET",
        "http://wsgate.test/staging/./a//b/../%40connections/x~y%20z?b=2&a=%2F&a=1&c&Z=sp%20ace",
        {"X-Custom": "  one   two  "}))
    vectors.append(signer_vector(
        "signer_token", "POST", "http://wsgate.test:8443/staging/%40connections/tok",
        {"Content-Type": "application/json"}, b'{"k":"v"}', token="SESSIONTOKEN/+="))
    # A query sent in a non-canonical encoding: botocore signs it as sent.
    vectors.append(signer_vector(
        "signer_rawquery", "GET", "http://wsgate.test/staging/q?k=a+b&j=%7e&i=%2f",
        {}))
    vectors.append(signer_vector(
        "signer_date", "DELETE", "http://wsgate.test/staging/%40connections/d",
        {"Date": "whatever"}))

    print("/* ---- GENERATED by tests/unit/http/gen_sigv4_vectors.py (botocore %s) ---- */"
          % botocore.__version__)
    print("/* Signed at %sZ with AKIDTEST / secretTEST, us-east-1, execute-api. */"
          % FIXED.isoformat())
    print("#define GEN_TIME ((time_t)%d)" % int(FIXED.replace(tzinfo=datetime.timezone.utc).timestamp()))
    print("static const struct { const char *name; const char *wire; } GEN_VECTORS[] = {")
    for name, wire in vectors:
        print("  {\"%s\",\n    %s}," % (name, c_string(wire)))
    print("};")

    signer = botocore.auth.SigV4Auth(Credentials("a", "b"), "execute-api", "us-east-1")
    paths = ["", "/", "/staging/%40connections/abc%3D", "/a/./b/../c", "//a//b//", "/..",
             "/a/b/..", "/a b/~x/!$&'()*+,;=:@", "/%7e/%2F/\u00e9", "a/../../b/.", "/./",
             "/a/..", "/a/.../b"]
    print("static const struct { const char *in, *want; } GEN_URIS[] = {")
    for p in paths:
        print("  {%s, %s}," % (c_string(p.encode("utf-8")),
                               c_string(signer._normalize_url_path(p).encode())))
    print("};")
    queries = ["", "a=1", "b=2&a=1", "a=2&a=1&a=10", "a&b=&c", "x=%2f%2F&y=a%20b",
               "k=a+b", "=v&&", "%41=%7e~", "b=%zz&a=%", "sp ace=1", "n=\u00e9"]
    print("static const struct { const char *in, *want; } GEN_QUERIES[] = {")
    for q in queries:
        # botocore's own canonical query for params given unencoded, which is
        # what a well-behaved client sends encoded on the wire.
        params = []
        for pair in q.split("&") if q else []:
            k, _, v = pair.partition("=")
            params.append((unquote(k, errors="strict"), unquote(v, errors="strict")))
        want = signer._canonical_query_string_params(params) if q else ""
        print("  {%s, %s}," % (c_string(q.encode("utf-8")), c_string(want.encode())))
    print("};")
    print("/* ---- END GENERATED ---- */")

    if args.corpus:
        os.makedirs(args.corpus, exist_ok=True)
        for name, wire in vectors:
            with open(os.path.join(args.corpus, name), "wb") as f:
                f.write(wire)
    return 0


if __name__ == "__main__":
    sys.exit(main())
