"""The payment sandbox for tests: served in the test (over real sockets, optionally with mutual
TLS from a throwaway CA) or run as its own process (``cpms sandbox-pay``)."""

from __future__ import annotations

import logging
import re
import ssl
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import trio
import trustme
from hypercorn.config import Config

from sim.paysandbox import Faults, Merchant, PaySandbox
from sim.paysandbox_http import sandbox_app

SID, PASSWORD, POINT = "4672496329", "merchant-password-for-tests", "4354"
MERCHANT = Merchant(SID, PASSWORD, POINT)


@dataclass
class Tls:
    """A CA, the sandbox's certificate, and a merchant's client certificate, as files."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    @classmethod
    def make(cls, where: Path) -> Tls:
        authority = trustme.CA()
        server = authority.issue_cert("127.0.0.1", "localhost")
        client = authority.issue_cert("merchant.cpms.test")
        files = cls(*(where / n for n in ("ca.pem", "s.pem", "s.key", "c.pem", "c.key")))
        authority.cert_pem.write_to_path(str(files.ca))
        server.cert_chain_pems[0].write_to_path(str(files.server_cert))
        server.private_key_pem.write_to_path(str(files.server_key))
        client.cert_chain_pems[0].write_to_path(str(files.client_cert))
        client.private_key_pem.write_to_path(str(files.client_key))
        return files


@dataclass
class Served:
    sandbox: PaySandbox
    http_url: str
    https_url: str | None


async def serve_sandbox(
    nursery: trio.Nursery,
    *,
    webhook_url: str | None = None,
    webhook_secret: str | None = None,
    faults: Faults | None = None,
    tls: Tls | None = None,
) -> Served:
    sandbox = PaySandbox(
        MERCHANT, webhook_url, webhook_secret, "http://127.0.0.1", faults or Faults()
    )
    config = Config()
    config.accesslog, config.errorlog = None, logging.getLogger("hypercorn.error")
    config.bind = ["127.0.0.1:0"]
    if tls is not None:
        config.insecure_bind = ["127.0.0.1:0"]
        config.certfile, config.keyfile = str(tls.server_cert), str(tls.server_key)
        config.ca_certs, config.verify_mode = str(tls.ca), ssl.CERT_REQUIRED
    binds: list[str] = await nursery.start(
        sandbox.run, sandbox_app(sandbox, tls=tls is not None), config
    )
    http = next(b for b in binds if b.startswith("http://"))
    sandbox.public_url = http
    return Served(sandbox, http, next((b for b in binds if b.startswith("https://")), None))


def sandbox_process(
    env: dict[str, str], log: Path, *options: str
) -> tuple[subprocess.Popen[str], str]:
    """``cpms sandbox-pay`` on a free port; the process and its base URL."""
    out = log.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cpms", "sandbox-pay", "--port", "0", *options],
        env=env,
        stdout=subprocess.PIPE,
        stderr=out,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        found = re.search(r"listening on (http://\S+)", line)
        if found:
            return proc, found.group(1)
    raise AssertionError(f"sandbox-pay did not start: {log.read_text()}")
