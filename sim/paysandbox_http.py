"""The payment sandbox's HTTP service (:class:`~sim.paysandbox.PaySandbox` behind Quart)."""

from __future__ import annotations

import json

import trio
from quart import Response, jsonify, request
from quart_trio import QuartTrio

from cpms.kernel.provider_wire import obank_response
from sim.paysandbox import PaySandbox


def sandbox_app(sandbox: PaySandbox, *, tls: bool = False) -> QuartTrio:
    """The sandbox's HTTP service: the providers' two endpoints (cards only over TLS when
    ``tls``), the payer's, and the counters."""
    app = QuartTrio("cpms-sandbox-pay")

    @app.post("/api/json/json.php")
    async def odengi() -> Response:
        try:
            envelope = json.loads(await request.get_data(as_text=True))
        except ValueError:
            envelope = None
        return jsonify(sandbox.odengi(envelope))

    @app.post("/obank/h2h")
    async def obank() -> Response:
        if tls and request.scheme != "https":  # cards only over mutual TLS
            return Response(obank_response(5), status=403, content_type="application/xml")
        raw = await request.get_data(as_text=False)
        xml = sandbox.obank(raw if isinstance(raw, bytes) else raw.encode())
        return Response(xml, content_type="application/xml")

    @app.post("/sandbox/invoices/<order>/<action>")
    async def payer(order: str, action: str) -> Response:
        if order not in sandbox.invoices or action not in ("pay", "cancel"):
            return jsonify({"error": "not_found"}), 404  # type: ignore[return-value]
        silent = request.args.get("silent") == "1"
        if action == "pay":
            invoice = sandbox.pay(
                order, silent=silent, reliable=request.args.get("reliable") == "1"
            )
        else:
            invoice = sandbox.cancel(order, silent=silent)
        return jsonify(sandbox.described(invoice))

    @app.get("/sandbox/invoices")
    async def every() -> Response:
        return jsonify([sandbox.described(i) for i in sandbox.invoices.values()])

    @app.get("/sandbox/invoices/<order>")
    async def one(order: str) -> Response:
        if order not in sandbox.invoices:
            return jsonify({"error": "not_found"}), 404  # type: ignore[return-value]
        return jsonify(sandbox.described(sandbox.invoices[order]))

    @app.get("/sandbox/stats")
    async def stats() -> Response:
        """The counters; with ``?wait=S``, answered once every webhook sent so far is
        delivered (or refused, or given up), or after ``S`` seconds."""
        wait = min(float(request.args.get("wait", "0") or 0), 600.0)
        with trio.move_on_after(wait):
            await sandbox.delivered()
        return jsonify(
            {
                "invoices": len(sandbox.invoices),
                "webhooks": dict(sandbox.counts),
                "outstanding": sandbox.outstanding,
                "polls": sum(sandbox.polls.values()),
            }
        )

    return app
