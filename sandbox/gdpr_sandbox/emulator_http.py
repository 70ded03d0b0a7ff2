"""The HTTP scaffolding the local emulators share (atlassian_emulator, consenthub_emulator).

`EmulatorServer` is a threaded HTTP server on 127.0.0.1 (by default) with start/stop/port/url, a request
log and injectable failures; `EmulatorHandler` answers one request for it: JSON replies, a size-limited
body, `GET /_emulator/log` and `POST /_emulator/config`. Each emulator keeps its own API, its own
configuration keys and the shape of its error bodies (`_error`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

LOG_PATH = "/_emulator/log"
CONFIG_PATH = "/_emulator/config"
MAX_BODY_BYTES = 1_000_000


def parse_failures(value: Any) -> dict[str, Any]:
    """The `failures` config value ({"status", "count", "retryAfter"?}) as stored; ValueError if bad."""
    if not isinstance(value, Mapping) or not 400 <= int(value.get("status", 503)) <= 599:
        raise ValueError("failures needs a 4xx/5xx status and a count")
    return {
        "status": int(value.get("status", 503)),
        "count": max(0, int(value.get("count", 1))),
        "retryAfter": value.get("retryAfter"),
    }


class EmulatorHandler(BaseHTTPRequestHandler):
    """One request to `self.emulator`. Subclasses serve their API in `_serve_api` and shape `_error`."""

    protocol_version = "HTTP/1.1"
    default_content_type: str | None = None  # sent with a non-empty body whose headers name none

    @property
    def emulator(self) -> Any:
        return self.server.emulator  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # the emulator's request log is the record; stderr noise helps nobody

    # ---------------------------------------------------------------- answers
    def _send(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        if body and self.default_content_type and "Content-Type" not in headers:
            self.send_header("Content-Type", self.default_content_type)
        if status != 204:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if status != 204 and body:
            self.wfile.write(body)

    def _json(self, status: int, doc: Any, headers: Mapping[str, str] | None = None) -> None:
        self._send(status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(doc).encode())

    def _error(self, status: int, message: str, error_type: str) -> None:
        self._json(status, {"message": message})

    def _not_found(self) -> None:
        self._json(404, {"message": "Not Found"})

    def _read_body(self) -> bytes | None:
        """The request body, or None once a too-large body has been answered 413."""
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            self._error(413, "body too large", "TooLarge")
            return None
        return self.rfile.read(length) if length else b""

    # ---------------------------------------------------------------- routing
    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        path, _, query = self.path.partition("?")
        if path == LOG_PATH:
            self._serve_log(query)
        else:
            self._not_found()

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        path = self.path.split("?")[0]
        raw = self._read_body()
        if raw is None:
            return
        if path == CONFIG_PATH:
            try:
                config = json.loads(raw or b"{}")
                if not isinstance(config, dict):
                    raise ValueError("config must be a JSON object")
                self._json(200, self.emulator.configure(config))
            except (ValueError, TypeError) as error:
                self._error(400, str(error), "InvalidConfig")
            return
        self._serve_api(path, raw)

    def _serve_log(self, query: str) -> None:
        self._json(200, {"requests": self.emulator.requests})

    def _serve_api(self, path: str, raw: bytes) -> None:
        self._not_found()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[EmulatorHandler], emulator: EmulatorServer):
        self.emulator = emulator
        super().__init__(address, handler)


class EmulatorServer:
    """A threaded HTTP server for one emulator, with its request log and injectable failures."""

    handler_class: type[EmulatorHandler] = EmulatorHandler
    thread_name = "emulator"

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.host = host
        self._port = port
        self._lock = threading.Lock()
        self._log: list[dict[str, Any]] = []
        self._failures: dict[str, Any] = {"status": 503, "count": 0, "retryAfter": None}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> Self:
        if self._server is not None:
            return self
        self._server = _Server((self.host, self._port), self.handler_class, self)
        self._thread = threading.Thread(target=self._server.serve_forever, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("emulator is not running")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # ---------------------------------------------------------------- log and failures
    @property
    def requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(entry) for entry in self._log]

    def record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self._log.append(entry)

    def _take_failure(self) -> tuple[int, Any] | None:
        """(status, retryAfter) while injected failures remain, else None."""
        with self._lock:
            if self._failures["count"] <= 0:
                return None
            self._failures["count"] -= 1
            return self._failures["status"], self._failures["retryAfter"]
