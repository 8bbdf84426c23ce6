"""App-side drivers: simulated mobile-app users charging at the fleet through the REST API.

Each driver is a client with a wallet (funded through the admin API) and a token signed with the
server's app secret. At random moments it picks a free connector of the fleet, starts a session
(an energy or amount limit, or none), polls its status as the app does, sometimes stops it by hand,
and checks its balance. Every call's latency is recorded per endpoint; a refusal the app expects
(``connector_occupied``, ``insufficient_balance``, a station gone offline) is an event, any other
failure an error (``rest:<endpoint>:<code>``).
"""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import trio

from sim.charger import VirtualChargePoint
from sim.stats import Stats

EXPECTED = {"connector_occupied", "insufficient_balance", "station_offline", "connector_faulted"}
FUNDING = "1000"


@dataclass(frozen=True)
class DriverOptions:
    rest_url: str
    drivers: int
    jwt_secret: str
    admin_token: str
    idle_mean: float = 60.0
    seed: int = 0
    audience: str = "authenticated"


class Driver:
    def __init__(
        self, number: int, options: DriverOptions, http: httpx.AsyncClient, stats: Stats
    ) -> None:
        self.options = options
        self.http = http
        self.stats = stats
        self.rng = random.Random(f"{options.seed}:driver:{number}")
        self.client = uuid.UUID(int=self.rng.getrandbits(128), version=4)
        claims = {
            "sub": str(self.client),
            "aud": options.audience,
            "exp": int(time.time()) + 86400 * 30,
        }
        self.headers = {
            "Authorization": f"Bearer {jwt.encode(claims, options.jwt_secret, algorithm='HS256')}"
        }

    async def call(
        self, method: str, path: str, endpoint: str, **kwargs: Any
    ) -> dict[str, Any] | None:
        began = time.perf_counter()
        try:
            reply = await self.http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            self.stats.error(f"rest:{endpoint}:{type(error).__name__}")
            return None
        self.stats.rest_done(endpoint, time.perf_counter() - began)
        body: dict[str, Any] = reply.json() if reply.content else {}
        if reply.status_code >= 400:
            code = body.get("error", str(reply.status_code))
            if code in EXPECTED:
                self.stats.events[f"rest_refused:{code}"] += 1
            else:
                self.stats.error(f"rest:{endpoint}:{code}")
            return None
        return body

    async def fund(self) -> bool:
        admin = {"Authorization": f"Bearer {self.options.admin_token}"}
        body = {"amount": FUNDING, "reason": "cpms sim driver", "key": f"sim-fund-{self.client}"}
        done = await self.call(
            "POST",
            f"/api/v1/admin/clients/{self.client}/credit",
            "admin/credit",
            json=body,
            headers=admin,
        )
        return done is not None

    async def run(self, chargers: list[VirtualChargePoint]) -> None:
        if not await self.fund():
            return
        while True:
            await trio.sleep(self.rng.expovariate(1 / self.options.idle_mean))
            free = [
                (cp, n)
                for cp in chargers
                if cp.connected and not cp.draining
                for n, c in cp.connectors.items()
                if c.status == "Available" and c.tx is None
            ]
            if not free:
                continue
            cp, connector = self.rng.choice(free)
            await self.charge(cp.station_id, connector)
            await self.call("GET", "/api/v1/balance/get", "balance/get", headers=self.headers)

    async def charge(self, station_id: str, connector: int) -> None:
        body: dict[str, Any] = {"station_id": station_id, "connector_id": connector}
        kind = self.rng.choice(["energy", "amount", "none"])
        if kind == "energy":
            body["energy_kwh"] = self.rng.choice([2, 5, 10, 20])
        elif kind == "amount":
            body["amount_som"] = self.rng.choice([50, 100, 200, 300])
        started = await self.call(
            "POST", "/api/v1/charging/start", "charging/start", json=body, headers=self.headers
        )
        if started is None:
            return
        session = started["session_id"]
        stop_after = self.rng.uniform(30, 600) if self.rng.random() < 0.4 else None
        began = trio.current_time()
        while True:
            await trio.sleep(5)
            status = await self.call(
                "GET", f"/api/v1/charging/status/{session}", "charging/status", headers=self.headers
            )
            if status is not None and status["session"]["status"] in (
                "settled",
                "rejected",
                "cancelled",
                "failed",
            ):
                return
            if stop_after is not None and trio.current_time() - began >= stop_after:
                await self.call(
                    "POST",
                    "/api/v1/charging/stop",
                    "charging/stop",
                    json={"session_id": session},
                    headers=self.headers,
                )
                stop_after = None


async def run_drivers(
    options: DriverOptions, chargers: list[VirtualChargePoint], stats: Stats
) -> None:
    """Run ``options.drivers`` app users against ``chargers`` until cancelled."""
    async with (
        httpx.AsyncClient(base_url=options.rest_url, timeout=60) as http,
        trio.open_nursery() as nursery,
    ):
        for number in range(options.drivers):
            nursery.start_soon(Driver(number, options, http, stats).run, chargers)
