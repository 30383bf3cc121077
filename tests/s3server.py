"""An S3 emulator for tests: moto's standalone server on loopback (an emulator, not AWS), behind
a small proxy that can fail uploads on demand. Skips visibly where moto is not installed.

    from s3server import s3   # the fixture: .endpoint, .bucket, .failing (threading.Event)
"""

from __future__ import annotations

import http.client
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

KEY, SECRET = "recorder-test-key", "recorder-test-secret-1618"


class FaultProxy(ThreadingHTTPServer):
    """Forwards every request to moto; while `failing` is set, answers uploads (PUT, POST) 503."""

    daemon_threads = True

    def __init__(self, upstream_port: int) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.upstream_port = upstream_port
        self.failing = threading.Event()
        self.failed = 0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def _forward(self) -> None:
        chunked = "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()
        length = int(self.headers.get("Content-Length") or 0)
        body = self._read_chunked() if chunked else (self.rfile.read(length) if length else None)
        if self.command in ("PUT", "POST") and self.server.failing.is_set():
            self.server.failed += 1
            msg = b"<Error><Code>ServiceUnavailable</Code><Message>injected</Message></Error>"
            self.send_response(503)
            self.send_header("Content-Length", str(len(msg)))
            self.end_headers()
            self.wfile.write(msg)
            return
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() not in ("connection", "transfer-encoding", "expect", "content-length")}
        if body is not None:
            headers["Content-Length"] = str(len(body))
        for attempt in range(3):  # moto's development server now and then drops a connection
            conn = http.client.HTTPConnection("127.0.0.1", self.server.upstream_port, timeout=30)
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError):
                conn.close()
                if attempt == 2:
                    raise
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("transfer-encoding", "connection", "content-length", "date", "server"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        conn.close()

    def _read_chunked(self) -> bytes:
        parts = []
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            parts.append(self.rfile.read(size))
            self.rfile.readline()

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward


class S3Emulator:
    def __init__(self, proxy: FaultProxy, bucket: str) -> None:
        self.proxy, self.bucket = proxy, bucket
        self.endpoint = f"http://127.0.0.1:{proxy.server_address[1]}"
        self.failing = proxy.failing

    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_REGION": "us-east-1",
                "AWS_ENDPOINT_URL": self.endpoint}


@pytest.fixture(scope="session")
def s3():
    server = str(Path(sys.executable).parent / "moto_server")  # the one installed beside this Python
    if not Path(server).exists():
        pytest.skip("moto's S3 emulator not installed: pip install 'moto[server]'")
    proc = subprocess.Popen([server, "-H", "127.0.0.1", "-p", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        port = None
        for line in proc.stdout:
            m = re.search(r"Running on http://127\.0\.0\.1:(\d+)", line)
            if m:
                port = int(m.group(1))
                break
        assert port, "moto_server did not start"
        threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # drain its log
        proxy = FaultProxy(port)
        threading.Thread(target=proxy.serve_forever, daemon=True).start()
        emulator = S3Emulator(proxy, "lake-bucket")
        saved = {k: os.environ.get(k) for k in emulator.env()}
        os.environ.update(emulator.env())
        import pyarrow.fs as pafs

        pafs.S3FileSystem(access_key=KEY, secret_key=SECRET, region="us-east-1", endpoint_override=emulator.endpoint,
                          scheme="http", allow_bucket_creation=True).create_dir(emulator.bucket)
        yield emulator
        proxy.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    finally:
        proc.kill()
        proc.wait(timeout=10)
