"""The payment providers' wire formats, shared by cpms's adapters (``actors.payment``) and the
sandbox service that plays the providers (``sim.paysandbox``).

**O!Dengi-style QR invoices**: every request is one JSON object posted to one address,
``{"cmd", "version", "sid", "mktime", "lang", "data", "hash"}``, where ``hash`` is the hex
HMAC-MD5, keyed with the merchant's password, of the compact JSON of the object without ``hash``
(UTF-8, no spaces, keys in the order sent). Amounts are in tyiyn. The answer is
``{"data": {...}}``, an error ``{"data": {"error": code, "desc": text}}``.

**OBANK-style host-to-host cards**: XML posted over mutual TLS (the merchant's client
certificate is its signature), ``<request point="P">`` holding one operation (``payment``,
``complete`` for a 3-D Secure return, ``status``), answered ``<response><result code="0"/>
<payment id="…" state="…" …><attribute name="…" value="…"/></payment></response>``; a result
code other than 0 is the request refused.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any
from xml.etree import ElementTree as ET

from defusedxml import DefusedXmlException
from defusedxml import ElementTree as SafeET

ODENGI_VERSION = 1005


def odengi_hash(envelope: dict[str, Any], password: str) -> str:
    unsigned = {k: v for k, v in envelope.items() if k != "hash"}
    text = json.dumps(unsigned, separators=(",", ":"), ensure_ascii=False)
    return hmac.new(password.encode(), text.encode(), hashlib.md5).hexdigest()


def odengi_envelope(
    cmd: str, data: dict[str, Any], *, sid: str, password: str, mktime: int
) -> dict[str, Any]:
    envelope: dict[str, Any] = {
        "cmd": cmd,
        "version": ODENGI_VERSION,
        "sid": sid,
        "mktime": str(mktime),
        "lang": "ru",
        "data": data,
    }
    envelope["hash"] = odengi_hash(envelope, password)
    return envelope


def odengi_signed(envelope: dict[str, Any], password: str) -> bool:
    given = envelope.get("hash")
    return isinstance(given, str) and hmac.compare_digest(odengi_hash(envelope, password), given)


def obank_request(point: str, operation: str, fields: dict[str, str], **attrs: str) -> bytes:
    """``<request point><operation attrs…><attribute name value/>…</operation></request>``."""
    root = ET.Element("request", point=point)
    op = ET.SubElement(root, operation, attrs)
    for name, value in fields.items():
        ET.SubElement(op, "attribute", name=name, value=value)
    return bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True))


def obank_response(code: int, payment: dict[str, str] | None = None, **fields: str) -> bytes:
    root = ET.Element("response")
    ET.SubElement(root, "result", code=str(code))
    if payment is not None:
        op = ET.SubElement(root, "payment", payment)
        for name, value in fields.items():
            ET.SubElement(op, "attribute", name=name, value=value)
    return bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True))


def obank_parse(xml: bytes, root_tag: str) -> tuple[str | None, ET.Element, dict[str, str]]:
    """The root's ``point``, its first operation element and that element's ``attribute``
    children as a dict.

    Raises:
        ValueError: not XML, another root, or no operation in it.
    """
    try:
        root = SafeET.fromstring(xml)
    except (ET.ParseError, DefusedXmlException) as error:
        raise ValueError(f"not XML: {error}") from None
    if root.tag != root_tag:
        raise ValueError(f"expected <{root_tag}>, got <{root.tag}>")
    ops = [child for child in root if child.tag != "result"]
    if not ops:
        raise ValueError("no operation in the document")
    op = ops[0]
    fields = {a.get("name", ""): a.get("value", "") for a in op.findall("attribute")}
    return root.get("point"), op, fields


def obank_result(xml: bytes) -> tuple[int, ET.Element | None, dict[str, str]]:
    """A response's result code, its payment element (if any) and that payment's attributes.

    Raises:
        ValueError: not a response.
    """
    try:
        root = SafeET.fromstring(xml)
    except (ET.ParseError, DefusedXmlException) as error:
        raise ValueError(f"not XML: {error}") from None
    result = root.find("result")
    if root.tag != "response" or result is None:
        raise ValueError("not an OBANK response")
    try:
        code = int(result.get("code", ""))
    except ValueError:
        raise ValueError("the result has no code") from None
    payment = root.find("payment")
    fields = (
        {}
        if payment is None
        else {a.get("name", ""): a.get("value", "") for a in payment.findall("attribute")}
    )
    return code, payment, fields
