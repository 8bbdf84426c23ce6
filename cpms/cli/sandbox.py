"""``cpms sandbox-pay``: the bundled payment sandbox as its own HTTP service (see
:mod:`sim.paysandbox`), with the merchant's credentials and the webhook secret from the settings
(the environment), the same ones the server is given."""

from __future__ import annotations

import argparse
import logging
import ssl
from typing import Any

import trio
from hypercorn.config import Config
from rich.console import Console

from cpms.settings import Settings
from sim.paysandbox import Faults, Merchant, PaySandbox
from sim.paysandbox_http import sandbox_app

out = Console(highlight=False, soft_wrap=True)


def _share(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError("a share between 0 and 1")
    return value


def add_sandbox_command(commands: Any, common: Any) -> None:
    cmd = commands.add_parser(
        "sandbox-pay",
        help="run the payment sandbox as its own HTTP service (O!Dengi- and OBANK-style)",
        description="Plays the QR and card providers for cpms over HTTP with no money, and "
        "sends cpms signed webhooks (CPMS_PAYMENT_WEBHOOK_SECRET), unreliably if asked. Point "
        "the server at it with CPMS_PAYMENT_PROVIDER=odengi and CPMS_ODENGI_URL="
        "http://HOST:PORT/api/json/json.php (and the same CPMS_ODENGI_SID/PASSWORD).",
    )
    common(cmd)
    cmd.add_argument("--host", default="127.0.0.1")
    cmd.add_argument("--port", type=int, default=8090, help="plain HTTP port (0 = any free)")
    cmd.add_argument("--webhook-url", help="where to send webhooks (unset: none sent)")
    cmd.add_argument("--duplicate", type=_share, default=0.0, help="share of webhooks sent twice")
    cmd.add_argument("--drop", type=_share, default=0.0, help="share of webhooks never sent")
    cmd.add_argument("--delay-max", type=float, default=0.0, help="s a webhook waits, at most")
    cmd.add_argument("--seed", type=int, help="seed of the faults, for a repeatable run")
    tls = cmd.add_argument_group("mutual TLS for the card endpoint (all three, or none)")
    tls.add_argument("--tls-port", type=int, default=8443)
    tls.add_argument("--tls-cert", help="the service's certificate (PEM)")
    tls.add_argument("--tls-key", help="its private key (PEM)")
    tls.add_argument("--client-ca", help="CA that signs the merchants' client certificates")
    cmd.set_defaults(handler=cmd_sandbox_pay)


def cmd_sandbox_pay(args: argparse.Namespace, settings: Settings) -> int:
    password = settings.odengi_password
    sandbox = PaySandbox(
        Merchant(
            sid=settings.odengi_sid or "sandbox",
            password="sandbox" if password is None else password.get_secret_value(),
            point=settings.obank_point_id or "sandbox",
        ),
        webhook_url=args.webhook_url,
        webhook_secret=(
            None
            if settings.payment_webhook_secret is None
            else settings.payment_webhook_secret.get_secret_value()
        ),
        public_url=f"http://{args.host}:{args.port}",
        faults=Faults(args.duplicate, args.drop, args.delay_max, args.seed),
    )
    if args.webhook_url and sandbox.webhook_secret is None:
        out.print("cpms: sandbox-pay: --webhook-url needs CPMS_PAYMENT_WEBHOOK_SECRET")
        return 2
    tls_given = [args.tls_cert, args.tls_key, args.client_ca]
    if any(tls_given) and not all(tls_given):
        out.print("cpms: sandbox-pay: --tls-cert, --tls-key and --client-ca go together")
        return 2
    config = Config()
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    if all(tls_given):
        config.bind = [f"{args.host}:{args.tls_port}"]
        config.insecure_bind = [f"{args.host}:{args.port}"]
        config.certfile, config.keyfile, config.ca_certs = (
            args.tls_cert,
            args.tls_key,
            args.client_ca,
        )
        config.verify_mode = ssl.CERT_REQUIRED
    else:
        config.bind = [f"{args.host}:{args.port}"]

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(
                sandbox.run, sandbox_app(sandbox, tls=all(tls_given)), config
            )
            sandbox.public_url = next(b for b in binds if b.startswith("http://"))
            print(f"sandbox-pay listening on {' '.join(binds)}", flush=True)

    trio.run(run)
    return 0
