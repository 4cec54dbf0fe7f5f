"""Tracing (W3C trace context, OTLP/HTTP JSON export), log rotation and
retention, and a real Prometheus scraping /metrics."""
import asyncio
import datetime
import http.server
import json
import os
import subprocess
import threading
import time
import urllib.parse
import urllib.request

import websockets

from conftest import free_port


class OtlpReceiver:
    """A small local OTLP/HTTP receiver: records every JSON body posted."""

    def __init__(self):
        self.bodies = []
        self.paths = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                outer.bodies.append(json.loads(self.rfile.read(n)))
                outer.paths.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def spans(self):
        out = []
        for body in self.bodies:
            for rs in body["resourceSpans"]:
                for ss in rs["scopeSpans"]:
                    out.extend(ss["spans"])
        return out

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def access_lines(srv):
    lines = []
    with open(os.path.join(srv.data_dir, "wsgate.log")) as f:
        for line in f:
            doc = json.loads(line)
            if doc.get("event") == "access":
                lines.append(doc)
    return lines


def test_traces_exported_and_logged(start_server):
    rx = OtlpReceiver()
    try:
        srv = start_server(settings={"otlp_endpoint": f"http://127.0.0.1:{rx.port}"})
        parent_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
        parent_span = "00f067aa0ba902b7"
        msg_trace = "0af7651916cd43dd8448eb211c80319c"

        async def main():
            ws = await websockets.connect(
                srv.url + "?userId=tracer", open_timeout=5,
                extra_headers={"traceparent": f"00-{parent_trace}-{parent_span}-01"})
            await asyncio.wait_for(ws.recv(), 5)
            await ws.send(json.dumps({"type": "chat", "message": "traced",
                                      "traceparent": f"00-{msg_trace}-b7ad6b7169203331-01"}))
            await asyncio.wait_for(ws.recv(), 5)
            await ws.send(json.dumps({"type": "room_list"}))
            await asyncio.wait_for(ws.recv(), 5)
            await ws.close()
        asyncio.run(main())

        deadline = time.time() + 10
        while time.time() < deadline and len(rx.spans()) < 4:
            time.sleep(0.1)
        spans = rx.spans()
        assert rx.paths and all(p == "/v1/traces" for p in rx.paths)
        names = [s["name"] for s in spans]
        assert names.count("$connect") == 1 and "chat" in names and "room_list" in names
        assert "$disconnect" in names
        connect = next(s for s in spans if s["name"] == "$connect")
        assert connect["traceId"] == parent_trace and connect["parentSpanId"] == parent_span
        chat = next(s for s in spans if s["name"] == "chat")
        assert chat["traceId"] == msg_trace
        room_list = next(s for s in spans if s["name"] == "room_list")
        assert len(room_list["traceId"]) == 32 and room_list["traceId"] not in (parent_trace, msg_trace)
        for s in spans:
            assert int(s["endTimeUnixNano"]) >= int(s["startTimeUnixNano"]) > 0
            assert len(s["spanId"]) == 16
        # every span is findable from the log lines by its trace and span id
        logged = {(l["traceId"], l["spanId"], l["routeKey"]) for l in access_lines(srv)}
        for s in spans:
            assert (s["traceId"], s["spanId"], s["name"]) in logged, s
    finally:
        rx.close()


def test_tracing_off_means_no_trace_ids(start_server):
    srv = start_server(settings={"enable_xray_tracing": "false"})

    async def main():
        ws = await websockets.connect(srv.url, open_timeout=5)
        await asyncio.wait_for(ws.recv(), 5)
        await ws.close()
    asyncio.run(main())
    time.sleep(0.3)
    lines = access_lines(srv)
    assert lines and all("traceId" not in l for l in lines)


def test_log_rotation_and_retention(start_server, tmp_path):
    data = tmp_path / "logs"
    data.mkdir()
    today = datetime.datetime.now(datetime.timezone.utc).date()
    yesterday = today - datetime.timedelta(days=1)
    old = today - datetime.timedelta(days=40)
    kept = today - datetime.timedelta(days=10)
    (data / f"wsgate-{old}.log").write_text('{"old":true}\n')
    (data / f"wsgate-{kept}.log").write_text('{"kept":true}\n')
    (data / "notes.txt").write_text("not a log\n")
    # the current file was last written yesterday: it is rotated at start
    cur = data / "wsgate.log"
    cur.write_text('{"yesterday":true}\n')
    t = time.time() - 86400
    os.utime(cur, (t, t))
    srv = start_server(settings={"log_retention_days": 14}, args=["--data-dir", str(data)])
    srv.data_dir = str(data)
    assert not (data / f"wsgate-{old}.log").exists()
    assert (data / f"wsgate-{kept}.log").exists()
    assert (data / "notes.txt").exists()
    assert (data / f"wsgate-{yesterday}.log").read_text() == '{"yesterday":true}\n'
    # today's lines go to a fresh wsgate.log
    text = cur.read_text()
    assert '"listening"' in text and "yesterday" not in text


def test_prometheus_scrapes_wsgate(start_server, tmp_path):
    srv = start_server()
    sent = 7

    async def main():
        ws = await websockets.connect(srv.url + "?userId=prom", open_timeout=5)
        await asyncio.wait_for(ws.recv(), 5)
        for i in range(sent):
            await ws.send(json.dumps({"type": "room_list"}))
            await asyncio.wait_for(ws.recv(), 5)
        await ws.close()
    asyncio.run(main())

    prom_port = free_port()
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: wsgate\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{srv.port}']\n")
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{prom_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        query = urllib.parse.urlencode({"query": "sum(wsgate_message_count_total)"})
        url = f"http://127.0.0.1:{prom_port}/api/v1/query?{query}"
        deadline = time.time() + 30
        value = None
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    res = json.load(r)["data"]["result"]
                if res:
                    value = float(res[0]["value"][1])
                    if value == sent:
                        break
            except OSError:
                pass
            time.sleep(0.5)
        assert value == sent, f"prometheus saw {value}, sent {sent}"
        with urllib.request.urlopen(
                f"http://127.0.0.1:{prom_port}/api/v1/query?" +
                urllib.parse.urlencode({"query": 'wsgate_message_count_total{route="room_list"}'}),
                timeout=2) as r:
            res = json.load(r)["data"]["result"]
        assert float(res[0]["value"][1]) == sent and res[0]["metric"]["stage"] == "staging"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
