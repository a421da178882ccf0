"""The SDK's HTTP client interface over one pooled urllib3 transport, with the dial's fence."""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

import certifi
import urllib3
from twilio.http import HttpClient
from twilio.http.response import Response

from shared.telephony.resend import FencePassed


class PooledHttpClient(HttpClient):
    """The SDK's HTTP client interface over one urllib3 pool shared by the process's threads.

    The SDK builds every request and reads every response as it always does; only the
    transport differs from its default ``requests`` session, which costs a dialing worker
    about as much CPU per request again as the request itself. Nothing is ever resent here
    (``_call`` decides that), and redirects are not followed.
    """

    def __init__(self, base_url: str, timeout: float, max_connections: int = 64) -> None:
        super().__init__(logging.getLogger("twilio.http_client"), False, timeout)
        # The environment's proxy and CA bundle, read once (as requests would per request).
        parts = urllib.parse.urlsplit(base_url)
        proxy = None
        if not urllib.request.proxy_bypass(parts.hostname or ""):
            proxy = urllib.request.getproxies().get(parts.scheme)
        ca_certs = (
            os.environ.get("REQUESTS_CA_BUNDLE")
            or os.environ.get("CURL_CA_BUNDLE")
            or certifi.where()
        )
        self.pool: urllib3.PoolManager = (
            urllib3.ProxyManager(proxy, maxsize=max_connections, ca_certs=ca_certs)
            if proxy
            else urllib3.PoolManager(maxsize=max_connections, ca_certs=ca_certs)
        )
        # Every request the SDK builds goes to the base URL's host: without a proxy, such a
        # request is handed straight to that host's connection pool, past the manager's URL
        # parsing and pool lookup (an eighth of the Python calls of a provider request).
        # Other URLs, and redirects, take the manager.
        self._origin = f"{parts.scheme}://{parts.netloc}"
        direct = not proxy and parts.scheme in ("http", "https") and bool(parts.hostname)
        self._origin_pool = self.pool.connection_from_url(self._origin) if direct else None
        # The calling thread's dial fence (``send_before``), set around a dial's requests.
        self.fence = threading.local()

    def request(
        self,
        method: str,
        uri: str,
        params: Mapping[str, object] | None = None,
        data: Mapping[str, object] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        """Send one request; what the SDK's own client returns for it."""
        sent = dict(headers or {})
        if params:
            uri += "?" + urllib.parse.urlencode(_form_pairs(params))
        body = None
        if data is not None:
            if sent.get("Content-Type") in ("application/json", "application/scim+json"):
                body = json.dumps(data).encode()
            else:
                body = urllib.parse.urlencode(_form_pairs(data)).encode()
                sent["Content-Type"] = "application/x-www-form-urlencoded"
        if auth is not None:
            sent["Authorization"] = "Basic " + base64.b64encode(":".join(auth).encode()).decode()
        sending: dict[str, Any] = {
            "body": body,
            "headers": sent,
            "timeout": self._timeout(timeout or self.timeout),
            "retries": False,
        }
        pool = self._origin_pool
        if pool is not None and uri.startswith(self._origin + "/") and not allow_redirects:
            path = uri[len(self._origin) :]
            reply = pool.urlopen(
                method.upper(), path, redirect=False, assert_same_host=False, **sending
            )
        else:
            reply = self.pool.request(method.upper(), uri, redirect=allow_redirects, **sending)
        return Response(reply.status, reply.data.decode("utf-8", "replace"), reply.headers)

    def _timeout(self, timeout: float) -> float | urllib3.Timeout:
        """The request's timeout; under a dial's fence, the connection must be made before the
        fence passes (so that the request is sent by then), and a fence already passed sends
        nothing."""
        send_before: float | None = getattr(self.fence, "send_before", None)
        if send_before is None:
            return timeout
        remaining = send_before - time.monotonic()
        if remaining <= 0:
            raise FencePassed("the dial's fence passed before its request was sent")
        return urllib3.Timeout(connect=min(remaining, timeout), read=timeout)


def _form_pairs(fields: Mapping[str, object]) -> list[tuple[str, str]]:
    """Form fields as the SDK means them: a list is one field repeated, None is left out."""
    pairs = []
    for name, value in fields.items():
        for item in value if isinstance(value, (list, tuple)) else (value,):
            if item is not None:
                pairs.append((name, str(item)))
    return pairs
