"""moto in server mode on loopback, behind a thin WSGI layer that adds latency and records calls."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from werkzeug.serving import BaseWSGIServer, make_server

READ_PREFIXES = ("Get", "List", "Describe")


@dataclass(frozen=True)
class AwsCall:
    """One request that reached the sandbox's AWS: who asked what, and whether it writes."""

    method: str
    path: str
    action: str
    at: float

    @property
    def writes(self) -> bool:
        if self.action:
            return not self.action.startswith(READ_PREFIXES) and self.action not in ("AssumeRole", "GetCallerIdentity")
        return self.method not in ("GET", "HEAD")


class AwsServer:
    """A moto server on 127.0.0.1 sharing this process's moto backends (so scenarios can reach in)."""

    def __init__(self) -> None:
        self.latency = 0.0
        self.calls: list[AwsCall] = []
        self._lock = threading.Lock()
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        from moto.server import DomainDispatcherApplication, create_backend_app

        from sandbox.moto_secrets import teach_moto_secrets

        teach_moto_secrets()
        app = DomainDispatcherApplication(create_backend_app)
        self._server = make_server("127.0.0.1", 0, self._wrap(app), threaded=True)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="sandbox-aws", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    @property
    def url(self) -> str:
        assert self._server is not None, "AwsServer.start() first"
        return f"http://127.0.0.1:{self._server.server_port}"

    def writes(self) -> list[AwsCall]:
        with self._lock:
            return [call for call in self.calls if call.writes]

    def _wrap(self, app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
        def middleware(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            action = _action(environ)
            with self._lock:
                self.calls.append(AwsCall(environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""), action, time.time()))
            if self.latency:
                time.sleep(self.latency)
            return app(environ, start_response)

        return middleware


def _action(environ: dict[str, Any]) -> str:
    """The API action of a query-protocol request (`Action=`), or `X-Amz-Target`'s operation."""
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target:
        return target.rsplit(".", 1)[-1]
    action = parse_qs(environ.get("QUERY_STRING", "")).get("Action")
    if action:
        return action[0]
    if environ.get("REQUEST_METHOD") == "POST" and "form" in environ.get("CONTENT_TYPE", ""):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length)
        environ["wsgi.input"] = io.BytesIO(body)
        found = parse_qs(body.decode("utf-8", "replace")).get("Action")
        return found[0] if found else ""
    return ""
