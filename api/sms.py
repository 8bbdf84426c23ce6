"""Who delivers the sign-in codes: an SMS gateway over HTTP, or, for development, the console.

* :class:`HttpSms` (``CPMS_SMS_GATEWAY_URL``): a URL template with ``{phone}`` and ``{text}``
  (both URL-encoded), requested with GET, or POST when ``CPMS_SMS_GATEWAY_METHOD=POST`` (then
  the same fields also as a form body), with HTTP Basic credentials when
  ``CPMS_SMS_GATEWAY_USER`` / ``CPMS_SMS_GATEWAY_PASSWORD`` are set. Any 2xx is delivered; another
  answer or no answer in 10 s is :class:`SmsFailed`.
* :class:`ConsoleSms`: the message printed to standard output (not the log, which never holds a
  code): a developer reads the code there.
"""

from __future__ import annotations

import sys
from typing import Protocol
from urllib.parse import quote

import httpx
import structlog

log = structlog.stdlib.get_logger("api.sms")


class SmsFailed(Exception):
    """The gateway did not take the message."""


class SmsSender(Protocol):
    async def send(self, phone: str, text: str) -> None: ...


class ConsoleSms:
    async def send(self, phone: str, text: str) -> None:
        sys.stdout.write(f"SMS to {phone}: {text}\n")
        sys.stdout.flush()


class HttpSms:
    def __init__(
        self,
        url_template: str,
        *,
        method: str = "GET",
        user: str | None = None,
        password: str | None = None,
    ) -> None:
        self.url_template, self.method = url_template, method.upper()
        self.auth = None if user is None else httpx.BasicAuth(user, password or "")

    async def send(self, phone: str, text: str) -> None:
        url = self.url_template.format(phone=quote(phone, safe=""), text=quote(text, safe=""))
        try:
            async with httpx.AsyncClient(timeout=10, auth=self.auth) as http:
                if self.method == "POST":
                    reply = await http.post(url, data={"phone": phone, "text": text})
                else:
                    reply = await http.get(url)
        except httpx.HTTPError as error:
            log.warning("sms gateway unreachable", error=type(error).__name__)
            raise SmsFailed("the SMS gateway could not be reached") from None
        if not reply.is_success:
            log.warning("sms gateway refused", status=reply.status_code)
            raise SmsFailed(f"the SMS gateway answered {reply.status_code}")
