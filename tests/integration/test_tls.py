"""wss://: TLS 1.2/1.3 only, AEAD ciphers, ALPN http/1.1, certificate reload
on SIGHUP without dropping connections, and the management API over HTTPS."""
import asyncio
import json
import signal
import socket
import ssl
import subprocess
import time

import pytest
import websockets

from conftest import WSGATE_BIN

pytestmark = pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")


def make_cert(dirpath, name, cn):
    key, cert = dirpath / f"{name}.key", dirpath / f"{name}.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
                    "-subj", f"/CN={cn}", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=30)
    return cert, key


def client_ctx(cafile, **kw):
    ctx = ssl.create_default_context(cafile=str(cafile))
    for k, v in kw.items():
        setattr(ctx, k, v)
    return ctx


def peer_cn(port, cafile):
    ctx = client_ctx(cafile)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            cert = s.getpeercert()
    return dict(x[0] for x in cert["subject"])["commonName"]


@pytest.fixture
def tls_server(start_server, tmp_path):
    cert, key = make_cert(tmp_path, "one", "wsgate-test-one")
    srv = start_server(settings={"tls_cert_file": str(cert), "tls_key_file": str(key)})
    srv.cert, srv.key = cert, key
    return srv


def test_wss_chat_and_outputs(tls_server, tmp_path):
    srv = tls_server
    url = f"wss://127.0.0.1:{srv.port}/{srv.stage}?userId=secure"
    ctx = client_ctx(srv.cert)

    async def main():
        async with websockets.connect(url, ssl=ctx, open_timeout=5) as ws:
            welcome = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert welcome["type"] == "welcome" and welcome["data"]["userId"] == "secure"
            big = "x" * 100000  # several TLS records each way
            await ws.send(json.dumps({"type": "chat", "message": big}))
            chat = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert chat["data"]["message"] == big
    asyncio.run(main())
    out = subprocess.run([WSGATE_BIN, "outputs", "--data-dir", srv.data_dir, "--port", str(srv.port),
                          "--set", f"tls_cert_file={srv.cert}", "--set", f"tls_key_file={srv.key}",
                          "-raw", "websocket_api_endpoint"], capture_output=True, text=True, timeout=10)
    assert out.stdout == f"wss://127.0.0.1:{srv.port}/{srv.stage}"


def test_protocol_versions_and_alpn(tls_server):
    srv = tls_server
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        ctx = client_ctx(srv.cert, minimum_version=version, maximum_version=version)
        ctx.set_alpn_protocols(["h2", "http/1.1"])
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                assert s.version() == ("TLSv1.2" if version == ssl.TLSVersion.TLSv1_2 else "TLSv1.3")
                assert s.selected_alpn_protocol() == "http/1.1"
                cipher = s.cipher()[0]
                assert "GCM" in cipher or "CHACHA20" in cipher, cipher
    # TLS 1.1 and older are refused
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        ctx.set_ciphers("ALL:@SECLEVEL=0")
    except (ValueError, ssl.SSLError):
        pytest.skip("this OpenSSL cannot even offer TLS 1.1")
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as raw:
        with pytest.raises((ssl.SSLError, ConnectionResetError, OSError)):
            ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    # plain text on a TLS port gets nowhere and the server keeps serving
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as raw:
        raw.sendall(b"GET /staging HTTP/1.1\r\nHost: x\r\n\r\n")
        raw.settimeout(5)
        try:
            data = raw.recv(100)
        except ConnectionResetError:
            data = b""
        assert not data.startswith(b"HTTP/1.1 101")
    assert peer_cn(srv.port, srv.cert) == "wsgate-test-one"


def test_sighup_reloads_certificate_without_dropping(tls_server, tmp_path):
    srv = tls_server
    url = f"wss://127.0.0.1:{srv.port}/{srv.stage}?userId=stay"

    async def main():
        async with websockets.connect(url, ssl=client_ctx(srv.cert), open_timeout=5) as ws:
            await asyncio.wait_for(ws.recv(), 5)
            # replace the files in place and signal
            cert2, key2 = make_cert(tmp_path, "two", "wsgate-test-two")
            srv.cert.write_bytes(cert2.read_bytes())
            srv.key.write_bytes(key2.read_bytes())
            srv.signal(signal.SIGHUP)
            deadline = time.time() + 5
            while True:
                try:
                    if peer_cn(srv.port, cert2) == "wsgate-test-two":
                        break
                except ssl.SSLError:
                    pass
                assert time.time() < deadline, "certificate not reloaded"
                await asyncio.sleep(0.1)
            # the connection made before the reload still works
            await ws.send(json.dumps({"type": "room_list"}))
            reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert reply["type"] == "room_list"
            # a broken pair on reload keeps the current one
            srv.key.write_text("not a key")
            srv.signal(signal.SIGHUP)
            await asyncio.sleep(0.3)
            assert peer_cn(srv.port, cert2) == "wsgate-test-two"
    asyncio.run(main())
    assert "tls_reloaded" in srv.log() and "tls_reload_error" in srv.log()


def test_bad_certificate_is_a_startup_error(tmp_path):
    (tmp_path / "bad.crt").write_text("nope")
    (tmp_path / "bad.key").write_text("nope")
    res = subprocess.run([WSGATE_BIN, "serve", "--port", "0", "--data-dir", str(tmp_path / "d"),
                          "--set", f"tls_cert_file={tmp_path / 'bad.crt'}",
                          "--set", f"tls_key_file={tmp_path / 'bad.key'}"],
                         capture_output=True, text=True, timeout=10)
    assert res.returncode != 0
    assert "certificate" in res.stderr
    # said to people at any logging_level (OFF printed nothing at all)
    res = subprocess.run([WSGATE_BIN, "serve", "--port", "0", "--data-dir", str(tmp_path / "d2"),
                          "--set", "logging_level=OFF",
                          "--set", f"tls_cert_file={tmp_path / 'bad.crt'}",
                          "--set", f"tls_key_file={tmp_path / 'bad.key'}"],
                         capture_output=True, text=True, timeout=10)
    assert res.returncode == 1
    assert res.stderr.startswith(f"wsgate: cannot load TLS certificate {tmp_path / 'bad.crt'}: "), res.stderr
