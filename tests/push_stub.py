"""A Web Push service for tests: a real HTTP server (:mod:`tests.http_stub`) standing in for
the browsers' push services. Each :class:`Browser` holds the keys a real browser would make for
its subscription; every message the stub accepts is checked as a push service and a browser
would check it (the VAPID token, the ``TTL`` and ``Content-Encoding`` headers) and decrypted
with the subscription's keys (RFC 8291).

Per browser, ``answers`` scripts the statuses of its next deliveries (201 once they run out);
``hang`` makes every request wait forever."""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field
from typing import Any

import http_ece
import jwt
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from actors.push.webpush import b64url, unb64url
from tests.http_stub import Answer, Received, serve_http


@dataclass
class Browser:
    id: str
    key: ec.EllipticCurvePrivateKey
    auth: bytes
    endpoint: str
    answers: list[int] = field(default_factory=list)
    attempts: int = 0

    def subscription(self) -> dict[str, Any]:
        """What ``PushSubscription.toJSON()`` gives the app."""
        point = self.key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        keys = {"p256dh": b64url(point), "auth": b64url(self.auth)}
        return {"endpoint": self.endpoint, "expirationTime": None, "keys": keys}


@dataclass
class Pushed:
    browser: str
    message: dict[str, Any]
    headers: dict[str, str]


@dataclass
class PushStub:
    browsers: dict[str, Browser] = field(default_factory=dict)
    pushed: list[Pushed] = field(default_factory=list)
    hang: bool = False
    arrived: trio.Event = field(default_factory=trio.Event)
    url: str = ""

    def browser(self) -> Browser:
        name = uuid.uuid4().hex
        made = Browser(
            name, ec.generate_private_key(ec.SECP256R1()), os.urandom(16), f"{self.url}/push/{name}"
        )
        self.browsers[name] = made
        return made

    def of(self, browser: Browser, kind: str | None = None) -> list[dict[str, Any]]:
        return [
            p.message
            for p in self.pushed
            if p.browser == browser.id and (kind is None or p.message["type"] == kind)
        ]

    async def wait_for(
        self, browser: Browser, kind: str, count: int = 1, timeout: float = 15.0
    ) -> list[dict[str, Any]]:
        with trio.fail_after(timeout):
            while len(self.of(browser, kind)) < count:
                await self.arrived.wait()
        return self.of(browser, kind)

    async def serve(self, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self.url = await nursery.start(serve_http, self._answer)
            task_status.started(self.url)

    async def _answer(self, request: Received) -> Answer:
        name = request.target.removeprefix("/push/")
        browser = self.browsers.get(name)
        if request.method != "POST" or browser is None:
            return 404, b""
        browser.attempts += 1
        if self.hang:
            await trio.sleep_forever()
        if browser.answers:
            status = browser.answers.pop(0)
            if status >= 300:
                return status, b""
        self._check_headers(request.headers)
        plain = http_ece.decrypt(
            request.body, private_key=browser.key, auth_secret=browser.auth, version="aes128gcm"
        )
        self.pushed.append(Pushed(name, json.loads(plain), request.headers))
        self.arrived.set()
        self.arrived = trio.Event()
        return 201, b""

    def _check_headers(self, headers: dict[str, str]) -> None:
        assert headers["content-encoding"] == "aes128gcm"
        assert int(headers["ttl"]) > 0
        scheme, _, params = headers["authorization"].partition(" ")
        assert scheme == "vapid", headers["authorization"]
        fields = dict(part.split("=", 1) for part in params.split(","))
        public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64url(fields["k"]))
        claims = jwt.decode(fields["t"], public, algorithms=["ES256"], audience=self.url)
        assert claims["sub"].startswith("mailto:")
