"""Web Push's two pieces of cryptography: the server's VAPID identity (RFC 8292) and a message's
encryption for one browser (RFC 8291, ``aes128gcm`` content coding of RFC 8188).

The VAPID private key comes only from the environment (``CPMS_VAPID_PRIVATE_KEY``), in any of
the forms keys are handed around in: the base64url raw 32-byte scalar ``web-push
generate-vapid-keys`` prints, a PEM text, or the base64 of a PEM or DER key (seed 004's
recipe). The public key is derived from it; ``CPMS_VAPID_PUBLIC_KEY``, when given too, must be
its pair. ``python -m cpms vapid-keys`` makes a new pair.
"""

from __future__ import annotations

import base64
import binascii
import time
from urllib.parse import urlsplit

import http_ece
import py_vapid
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

#: a VAPID token is signed for this long and reused until it has a quarter of it left
TOKEN_LIFETIME_S = 12 * 3600
#: RFC 8291: the largest plaintext a 4096-byte push message can carry (one record)
MAX_PAYLOAD = 3993


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    """Base64url (or plain base64), padding optional; ValueError for anything else."""
    cleaned = text.strip().replace("+", "-").replace("/", "_").rstrip("=")
    try:
        return base64.urlsafe_b64decode(cleaned + "=" * (-len(cleaned) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None


def public_bytes(key: ec.EllipticCurvePublicKey) -> bytes:
    point = serialization.PublicFormat.UncompressedPoint
    return key.public_bytes(serialization.Encoding.X962, point)


def parse_private_key(text: str) -> ec.EllipticCurvePrivateKey:
    """A P-256 private key from raw, PEM, or base64 PEM/DER text; ValueError otherwise."""
    text = text.strip()
    key: object
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_private_key(text.encode(), password=None)
    else:
        raw = unb64url(text)
        if len(raw) == 32:
            key = ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())
        elif raw.startswith(b"-----BEGIN"):
            key = serialization.load_pem_private_key(raw, password=None)
        else:
            key = serialization.load_der_private_key(raw, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ValueError("the VAPID key must be an EC P-256 private key")
    return key


def browser_keys(p256dh: str, auth: str) -> tuple[ec.EllipticCurvePublicKey, bytes]:
    """A subscription's keys, checked: ``p256dh`` a P-256 point (65 bytes, uncompressed),
    ``auth`` 16 bytes; ValueError naming the bad one."""
    try:
        point = unb64url(p256dh)
        public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except ValueError:
        raise ValueError("keys.p256dh is not a P-256 public key (base64url, 65 bytes)") from None
    if len(point) != 65:
        raise ValueError("keys.p256dh is not a P-256 public key (base64url, 65 bytes)")
    try:
        secret = unb64url(auth)
    except ValueError:
        secret = b""
    if len(secret) != 16:
        raise ValueError("keys.auth is not a 16-byte secret (base64url)")
    return public, secret


def encrypt(payload: bytes, p256dh: str, auth: str) -> bytes:
    """``payload`` for one browser: a fresh sender key and salt each time (RFC 8291)."""
    public, secret = browser_keys(p256dh, auth)
    return bytes(
        http_ece.encrypt(
            payload,
            private_key=ec.generate_private_key(ec.SECP256R1()),
            dh=public_bytes(public),
            auth_secret=secret,
            version="aes128gcm",
        )
    )


class VapidKeys:
    """The server's identity towards push services, and the ``Authorization`` it sends."""

    def __init__(self, private_key: str, subject: str, public_key: str | None = None) -> None:
        key = parse_private_key(private_key)
        self.public_key = b64url(public_bytes(key.public_key()))
        if public_key is not None and unb64url(public_key) != public_bytes(key.public_key()):
            raise ValueError("CPMS_VAPID_PUBLIC_KEY is not the private key's pair")
        if not subject.startswith(("mailto:", "https://")):
            raise ValueError("the VAPID subject must be a mailto: or https: URL")
        self.subject = subject
        self._vapid = py_vapid.Vapid02(private_key=key)
        self._tokens: dict[str, tuple[str, float]] = {}  # audience → header, good until

    def authorization(self, endpoint: str, now: float | None = None) -> str:
        """``vapid t=<JWT>,k=<public key>`` for the push service of ``endpoint``."""
        now = time.time() if now is None else now
        parts = urlsplit(endpoint)
        audience = f"{parts.scheme}://{parts.netloc}"
        known = self._tokens.get(audience)
        if known is not None and now < known[1]:
            return known[0]
        expires = int(now) + TOKEN_LIFETIME_S
        claims = {"aud": audience, "exp": expires, "sub": self.subject}
        header = str(self._vapid.sign(claims)["Authorization"])
        self._tokens[audience] = (header, expires - TOKEN_LIFETIME_S / 4)
        return header


def new_key_pair() -> tuple[str, str]:
    """A new VAPID pair: the private key (raw, base64url) and the public key (base64url)."""
    key = ec.generate_private_key(ec.SECP256R1())
    raw = key.private_numbers().private_value.to_bytes(32, "big")
    return b64url(raw), b64url(public_bytes(key.public_key()))
