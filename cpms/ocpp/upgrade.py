"""A WebSocket upgrade request as the OCPP door reads it (RFC 6455 §4.2.1 on RFC 9112's syntax),
and the HTTP answers to it. Strict: an upgrade request of at most ``MAX_HEADERS`` header lines,
a GET to WebSocket version 13 with its key and one Host, and no body."""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from http import HTTPStatus

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_HEADERS = 64

#: RFC 9110 §5.1 field names; a field's value may not hold control characters but tab
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_VALUE = re.compile(rb"[^\x00-\x08\x0a-\x1f\x7f]*")
_TARGET = re.compile(rb"/[!-~]*")


@dataclass(frozen=True, slots=True)
class Upgrade:
    """A client's WebSocket upgrade request: its target (path and query), the subprotocols it
    offered, and its other header fields (names in lower case)."""

    target: str
    subprotocols: list[str]
    headers: list[tuple[bytes, bytes]]
    key: bytes

    def header(self, name: bytes) -> bytes | None:
        """The first value of field ``name`` (lower case)."""
        return next((value for field, value in self.headers if field == name), None)


class BadUpgrade(Exception):
    """Not a WebSocket upgrade this server takes; ``status`` says how to answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def parse_upgrade(head: bytes) -> Upgrade:
    """The upgrade request in ``head`` (up to, not including, its blank line).

    Raises:
        BadUpgrade: not a GET upgrade to WebSocket version 13 with its key, or not HTTP/1.1.
    """
    request_line, *lines = head.split(b"\r\n")
    parts = request_line.split(b" ")
    if len(parts) != 3 or parts[2] != b"HTTP/1.1" or not _TARGET.fullmatch(parts[1]):
        raise BadUpgrade("not an HTTP/1.1 request line")
    if parts[0] != b"GET":
        raise BadUpgrade("a WebSocket upgrade is a GET", 405)
    if len(lines) > MAX_HEADERS:
        raise BadUpgrade(f"more than {MAX_HEADERS} header lines", 431)
    headers: list[tuple[bytes, bytes]] = []
    for line in lines:
        name, colon, value = line.partition(b":")
        value = value.strip(b" \t")
        if not colon or not _TOKEN.fullmatch(name) or not _VALUE.fullmatch(value):
            raise BadUpgrade("a malformed header line")
        headers.append((name.lower(), value))
    fields: dict[bytes, list[bytes]] = {}
    for name, value in headers:
        fields.setdefault(name, []).append(value)

    def tokens(name: bytes) -> list[str]:
        joined = b",".join(fields.get(name, []))
        return [t.strip().decode("latin-1") for t in joined.split(b",") if t.strip()]

    if len(fields.get(b"host", [])) != 1:
        raise BadUpgrade("one Host header is required")
    if b"content-length" in fields or b"transfer-encoding" in fields:
        raise BadUpgrade("an upgrade request has no body")
    if "upgrade" not in (t.lower() for t in tokens(b"connection")):
        raise BadUpgrade("Connection: Upgrade is required")
    if [t.lower() for t in tokens(b"upgrade")] != ["websocket"]:
        raise BadUpgrade("Upgrade: websocket is required")
    if fields.get(b"sec-websocket-version") != [b"13"]:
        raise BadUpgrade("Sec-WebSocket-Version 13 is required", 426)
    keys = fields.get(b"sec-websocket-key", [])
    if len(keys) != 1 or not keys[0]:
        raise BadUpgrade("one Sec-WebSocket-Key is required")
    return Upgrade(
        target=parts[1].decode("ascii"),
        subprotocols=tokens(b"sec-websocket-protocol"),
        headers=headers,
        key=keys[0],
    )


def http_response(
    status: int, headers: list[tuple[bytes, bytes]] | None = None, body: bytes = b""
) -> bytes:
    """A whole HTTP/1.1 response that ends the connection."""
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}".encode()]
    lines += [name + b": " + value for name, value in headers or []]
    lines += [b"Content-Length: " + str(len(body)).encode(), b"Connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def accept_token(key: bytes) -> bytes:
    """The Sec-WebSocket-Accept for a client's Sec-WebSocket-Key (RFC 6455 §4.2.2)."""
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())
