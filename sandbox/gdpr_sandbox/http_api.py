"""The HTTP API, emulated: a local HTTP server that turns each request into an API Gateway HTTP API
payload-format-2.0 event for the route's function and turns its answer back into HTTP."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .runtime import FunctionRuntime

MAX_PAYLOAD = 10 * 1024 * 1024  # API Gateway's own limit


class _Server(ThreadingHTTPServer):
    # API Gateway takes bursts of connections; the stdlib's listen backlog of 5 would reset them.
    request_queue_size = 128


def http_api_event(method: str, raw_path: str, raw_query: str, headers: dict[str, str], body: bytes,
                   source_ip: str, api_id: str = "sandbox") -> dict[str, Any]:
    now = datetime.now(UTC)
    route_key = f"{method} {raw_path}"
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": raw_path,
        "rawQueryString": raw_query,
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": api_id,
            "domainName": f"{api_id}.execute-api.localhost",
            "domainPrefix": api_id,
            "http": {"method": method, "path": raw_path, "protocol": "HTTP/1.1", "sourceIp": source_ip,
                     "userAgent": headers.get("user-agent", "")},
            "requestId": str(uuid.uuid4()),
            "routeKey": route_key,
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        # API Gateway base64-encodes bodies it does not treat as text; always doing so keeps the
        # handler honest (it must decode before checking a signature over the raw bytes).
        "body": base64.b64encode(body).decode() if body else None,
        "isBase64Encoded": bool(body),
    }
    if raw_query:
        params: dict[str, str] = {}
        for pair in raw_query.split("&"):
            k, _, v = pair.partition("=")
            params[k] = f"{params[k]},{v}" if k in params else v
        event["queryStringParameters"] = params
    return event


class HttpApi:
    def __init__(self, runtime: FunctionRuntime, routes: dict[str, str], host: str = "127.0.0.1", port: int = 0,
                 route_auth: dict[str, str] | None = None):
        self.runtime = runtime
        self.routes = routes
        self.route_auth = route_auth or {}  # route -> "AWS_IAM" for routes that need SigV4
        self.requests = 0
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # access logs would only hold paths; keep quiet
                return

            def _handle(self) -> None:
                api.requests += 1
                path, _, query = self.path.partition("?")
                fn = api.routes.get(f"{self.command} {path}")
                length = int(self.headers.get("content-length") or 0)
                if length > MAX_PAYLOAD:
                    return self._send(413, {"message": "Request Entity Too Large"})
                body = self.rfile.read(length) if length else b""
                if fn is None:
                    return self._send(404, {"message": "Not Found"})
                # API Gateway refuses an IAM route's unsigned request before any function runs. The
                # signature itself is not verified here: there are no real IAM principals to check.
                if (api.route_auth.get(f"{self.command} {path}") == "AWS_IAM"
                        and not (self.headers.get("authorization") or "").startswith("AWS4-HMAC-SHA256")):
                    return self._send(403, {"message": "Forbidden"})
                headers: dict[str, str] = {}
                for k, v in self.headers.items():
                    k = k.lower()
                    headers[k] = f"{headers[k]},{v}" if k in headers else v
                event = http_api_event(self.command, path, query, headers, body, self.client_address[0])
                try:
                    result = api.runtime.invoke(fn, event)
                except Exception:  # noqa: BLE001 - Lambda errors become 500 at API Gateway
                    return self._send(500, {"message": "Internal Server Error"})
                self._reply(result)

            def _reply(self, result: Any) -> None:
                if isinstance(result, dict) and "statusCode" in result:
                    body = result.get("body") or ""
                    raw = base64.b64decode(body) if result.get("isBase64Encoded") else body.encode()
                    headers = dict(result.get("headers") or {})
                    self._send_raw(int(result["statusCode"]), raw, headers, result.get("cookies") or [])
                else:  # payload 2.0 lets a function return a bare JSON value
                    self._send(200, result)

            def _send(self, status: int, payload: Any) -> None:
                self._send_raw(status, json.dumps(payload).encode(), {"content-type": "application/json"}, [])

            def _send_raw(self, status: int, raw: bytes, headers: dict[str, str], cookies: list[str]) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    if k.lower() != "content-length":
                        self.send_header(k, str(v))
                for c in cookies:
                    self.send_header("set-cookie", c)
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_POST = do_GET = do_PUT = do_DELETE = do_PATCH = _handle  # noqa: N815

        self._server = _Server((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="http-api", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> HttpApi:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        time.sleep(0)
