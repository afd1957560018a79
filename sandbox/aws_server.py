"""moto in server mode on loopback, behind a thin WSGI layer that adds latency, enforces Route 53's request
quotas per account (sandbox.aws_quota) and records calls."""

from __future__ import annotations

import io
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from werkzeug.serving import BaseWSGIServer, make_server

from sandbox.aws_quota import (
    CLOUDFORMATION_NAMESPACE,
    ROUTE53_ACCOUNT,
    ROUTE53_NAMESPACE,
    ROUTE53_OPERATION,
    Bucket,
    Quotas,
    route53_operation,
    throttling_body,
)

READ_PREFIXES = ("Get", "List", "Describe")
# The world's own back door (set-up and scenarios, sandbox.world.World.client) stands for work done before a
# run: it is not metered, as a real account's set-up would long have refilled its buckets.
WORLD_ACCESS_KEY = "AKIASANDBOXWORLD0001"
_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/[^/]+/[^/]+/([^/]+)/")


@dataclass(frozen=True)
class AwsCall:
    """One request that reached the sandbox's AWS: who asked what, and whether it writes."""

    method: str
    path: str
    action: str
    at: float
    service: str = ""
    account: str = ""
    throttled: bool = False
    metered: bool = True  # false for the world's own back door

    @property
    def writes(self) -> bool:
        if self.action:
            return not self.action.startswith(READ_PREFIXES) and self.action not in ("AssumeRole", "GetCallerIdentity")
        return self.method not in ("GET", "HEAD")


class AwsServer:
    """A moto server on 127.0.0.1 sharing this process's moto backends (so scenarios can reach in)."""

    def __init__(self) -> None:
        self.latency = 0.0
        self.route53 = Quotas(ROUTE53_ACCOUNT, ROUTE53_OPERATION)
        self.cloudformation: Quotas | None = None  # no published number: off unless a test sets one
        self.calls: list[AwsCall] = []
        self._lock = threading.Lock()
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

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

    def throttled(self) -> list[AwsCall]:
        with self._lock:
            return [call for call in self.calls if call.throttled]

    def set_route53_quota(self, account: Bucket = ROUTE53_ACCOUNT, operation: Bucket = ROUTE53_OPERATION) -> None:
        """Route 53's buckets per account (the documented ones by default), all full."""
        self.route53 = Quotas(account, operation)

    def set_cloudformation_quota(self, bucket: Bucket | None) -> None:
        """A CloudFormation bucket per account and per operation (None: unlimited, the default)."""
        self.cloudformation = None if bucket is None else Quotas(bucket, bucket)

    def _wrap(self, app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
        def middleware(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
            access_key, service = _credential(environ)
            action = route53_operation(method, path) if service == "route53" else _action(environ)
            account = _account(environ, access_key)
            metered = access_key != WORLD_ACCESS_KEY
            throttled = metered and not self._admit(service, account, action)
            with self._lock:
                self.calls.append(AwsCall(method, path, action, time.time(), service, account, throttled, metered))
            if self.latency:
                time.sleep(self.latency)
            if throttled:
                namespace = ROUTE53_NAMESPACE if service == "route53" else CLOUDFORMATION_NAMESPACE
                body = throttling_body(namespace)
                start_response("400 Bad Request", [("Content-Type", "text/xml"), ("Content-Length", str(len(body)))])
                return [body]
            return app(environ, start_response)

        return middleware

    def _admit(self, service: str, account: str, action: str) -> bool:
        quotas = {"route53": self.route53, "cloudformation": self.cloudformation}.get(service)
        return quotas is None or quotas.admit(account, action)


def _credential(environ: dict[str, Any]) -> tuple[str, str]:
    """(access key id, service) from a SigV4 Authorization header's credential scope; ('', '') unsigned."""
    found = _CREDENTIAL.search(environ.get("HTTP_AUTHORIZATION", ""))
    return (found[1], found[2]) if found else ("", "")


def _account(environ: dict[str, Any], access_key: str) -> str:
    """The moto account a request acts in, by moto's own rule (its header, else the access key's account)."""
    if environ.get("HTTP_X_MOTO_ACCOUNT_ID"):
        return str(environ["HTTP_X_MOTO_ACCOUNT_ID"])
    from moto.iam.models import get_account_id_from

    return get_account_id_from(access_key)


def _action(environ: dict[str, Any]) -> str:
    """The API action of a query-protocol request (`Action=`), or `X-Amz-Target`'s operation."""
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target:
        return str(target).rsplit(".", 1)[-1]
    action = parse_qs(str(environ.get("QUERY_STRING", ""))).get("Action")
    if action:
        return action[0]
    if environ.get("REQUEST_METHOD") == "POST" and "form" in environ.get("CONTENT_TYPE", ""):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length)
        environ["wsgi.input"] = io.BytesIO(body)
        found = parse_qs(body.decode("utf-8", "replace")).get("Action")
        return found[0] if found else ""
    return ""
