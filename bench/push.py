"""Web Push through the sender (``actors/push/``): notifications a second, each encrypted for its
browser (RFC 8291) and POSTed with its VAPID token to a local push service, on the embedded
PostgreSQL (each notification reads its recipient's subscriptions and marks them used).

What a session pays is :meth:`PushSender.notify` (queue and go): its cost is reported apart.
The push service answers 201 at once without decrypting (the tests check the messages).

    python bench/push.py                        # 2,000 notifications to 2,000 drivers
    python bench/push.py --notifications 5000 --workers 32 --json result.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import h11
import trio

from actors.push.sender import Push, PushSender, PushSettings
from actors.push.webpush import VapidKeys, b64url, new_key_pair, public_bytes
from cpms.logs import configure_logging
from storage import open_storage
from storage import push as store


class PushService:
    """Counts what it is sent and answers 201."""

    def __init__(self) -> None:
        self.received = 0
        self.arrived: list[float] = []
        self.done = trio.Event()
        self.expected = 0

    async def connection(self, stream: trio.SocketStream) -> None:
        http = h11.Connection(h11.SERVER)
        while True:
            event = http.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                if not data:
                    return
                http.receive_data(data)
            elif isinstance(event, h11.EndOfMessage):
                self.received += 1
                self.arrived.append(time.perf_counter())
                if self.received >= self.expected:
                    self.done.set()
                head = [("content-length", "0")]
                await stream.send_all(
                    http.send(h11.Response(status_code=201, headers=head))
                    + http.send(h11.EndOfMessage())
                )
                http.start_next_cycle()
            elif event is h11.PAUSED or isinstance(event, h11.ConnectionClosed):
                return


def browser_keys() -> tuple[str, str]:
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    return b64url(public_bytes(key.public_key())), b64url(uuid.uuid4().bytes)


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    service = PushService()
    service.expected = args.notifications
    with tempfile.TemporaryDirectory(prefix="cpms-push-bench-") as tmp:
        async with (
            open_storage(database_url=None, pg_dir=Path(tmp) / "pg", pool_size=8) as db,
            trio.open_nursery() as nursery,
        ):
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            port = listeners[0].socket.getsockname()[1]
            nursery.start_soon(trio.serve_listeners, service.connection, listeners)
            users = [uuid.uuid4() for _ in range(args.notifications)]
            for user in users:
                await store.subscribe(
                    db,
                    user,
                    "client",
                    f"http://127.0.0.1:{port}/push/{user}",
                    browser_keys(),
                    user_agent=None,
                    language="ru",
                )
            keys = VapidKeys(new_key_pair()[0], "mailto:bench@example.com")
            settings = PushSettings(queue=args.notifications, workers=args.workers)
            sender = PushSender(db, keys, settings)
            shutdown = trio.Event()
            await nursery.start(sender.run, shutdown)
            data = {
                "session_id": "S",
                "station_id": "CP-1",
                "energy_kwh": "12.345",
                "cost": "180.00",
            }
            began = time.perf_counter()
            for user in users:
                sender.notify(Push("charging_completed", data, user_id=user))
            queued = time.perf_counter() - began
            with trio.fail_after(600):
                await service.done.wait()
            took = time.perf_counter() - began
            shutdown.set()
            nursery.cancel_scope.cancel()
    return {
        "notifications": args.notifications,
        "workers": args.workers,
        "delivered": sender.counts.delivered,
        "failed": sender.counts.failed,
        "seconds": round(took, 2),
        "per_second": round(args.notifications / took),
        "notify_us_each": round(queued / args.notifications * 1e6, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--notifications", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=PushSettings.workers)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    configure_logging("WARNING", "console")
    result = trio.run(bench, args)
    print(json.dumps(result, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
