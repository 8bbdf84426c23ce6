"""The webhooks' own port (``api.webhook_listener``) as HTTP: kept-alive and pipelined
requests answered in order, refusals in the app's error shape with the connection kept, what
can't be read refused and the connection closed, the bounds (slow senders, idle connections,
too many at once) and a shutdown that finishes answers in progress. The intake behind it is a
stub here; the whole cpms answers through it in ``test_payments``."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import trio

from api.webhook_door import Answer, WebhookIntake
from api.webhook_listener import Limits, serve_webhooks

BOUND_S = 10  # no wait here comes near this, even on a busy machine
HOOK = "/api/v1/payment/webhook"


class Stub(WebhookIntake):
    """Answers every notice with its size and sender; ``hold`` keeps answers waiting."""

    def __init__(self) -> None:
        self.told: list[bytes] = []
        self.entered = trio.Event()
        self.hold: trio.Event | None = None

    async def answer(self, headers: Mapping[str, str], remote: str | None, raw: bytes) -> Answer:
        self.told.append(raw)
        self.entered.set()
        if self.hold is not None:
            await self.hold.wait()
        signature = headers.get("x-webhook-signature")
        return 200, {"success": True, "size": len(raw), "remote": remote, "sig": signature}, {}


@dataclass
class Listening:
    port: int
    stub: Stub
    shutdown: trio.Event
    stopped: trio.Event

    async def connect(self) -> trio.SocketStream:
        return await trio.open_tcp_stream("127.0.0.1", self.port)


async def listening(nursery: trio.Nursery, limits: Limits | None = None) -> Listening:
    stub, shutdown, stopped = Stub(), trio.Event(), trio.Event()

    async def serve(task_status: trio.TaskStatus[str]) -> None:
        await serve_webhooks(
            stub,
            "127.0.0.1",
            0,
            shutdown_trigger=shutdown.wait,
            graceful_timeout=BOUND_S,
            limits=limits or Limits(),
            task_status=task_status,
        )
        stopped.set()

    url: str = await nursery.start(serve)
    return Listening(int(url.rsplit(":", 1)[1]), stub, shutdown, stopped)


def post(body: bytes, path: str = HOOK, method: str = "POST", **headers: str) -> bytes:
    head = [f"{method} {path} HTTP/1.1", "Host: cpms", f"Content-Length: {len(body)}"]
    head += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: Any


async def replies(stream: trio.SocketStream, count: int | None = None) -> list[Reply]:
    """``count`` replies (all until the server closes when None), parsed as they come."""
    buffer, got = b"", list[Reply]()
    with trio.fail_after(BOUND_S):
        while count is None or len(got) < count:
            while b"\r\n\r\n" in buffer:
                head, _, rest = buffer.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (x.partition(":") for x in lines[1:])
                }
                length = int(headers.get("content-length", "0"))
                if len(rest) < length:
                    break
                status = int(lines[0].split()[1])
                got.append(Reply(status, headers, json.loads(rest[:length]) if length else None))
                buffer = rest[length:]
                if count is not None and len(got) == count:
                    return got
            data = await stream.receive_some(65536)
            if not data:
                assert count is None, f"closed after {len(got)} of {count} replies"
                return got
            buffer += data
    return got


async def closed(stream: trio.SocketStream) -> bool:
    """The server closed the connection (within the bound), having sent nothing more."""
    with trio.fail_after(BOUND_S):
        return await stream.receive_some(65536) == b""


async def test_kept_alive_and_pipelined_requests_are_answered_in_order(
    nursery: trio.Nursery,
) -> None:
    on = await listening(nursery)
    stream = await on.connect()
    await stream.send_all(
        post(b"{}", X_Webhook_Signature="one")
        + post(b'{"a": 1}', path="/payment/webhook", X_Webhook_Signature="two")
        + post(b"x" * 3000, path=HOOK + "?from=provider", X_Webhook_Signature="three")
    )
    first, second, third = await replies(stream, 3)
    assert [r.status for r in (first, second, third)] == [200, 200, 200]
    assert [r.body["sig"] for r in (first, second, third)] == ["one", "two", "three"]
    assert [r.body["size"] for r in (first, second, third)] == [2, 8, 3000]
    assert first.body["remote"] == "127.0.0.1"
    assert first.headers["content-type"] == "application/json"

    await stream.send_all(post(b"{}", path="/api/v1/balance/get") + post(b"", method="GET"))
    missing, wrong_method = await replies(stream, 2)
    assert (missing.status, missing.body["error"], missing.body["success"]) == (
        404,
        "not_found",
        False,
    )
    assert (wrong_method.status, wrong_method.body["error"]) == (405, "method_not_allowed")
    assert wrong_method.headers["allow"] == "POST"
    await stream.send_all(post(b"{}"))  # refusals kept the connection
    (again,) = await replies(stream, 1)
    assert again.status == 200
    assert len(on.stub.told) == 4  # refusals told the intake nothing


async def test_what_cannot_be_read_is_refused_and_the_connection_closed(
    nursery: trio.Nursery,
) -> None:
    on = await listening(nursery)
    cases = [
        (post(b'{"pad": "' + b"x" * 70_000 + b'"}'), 413, "payload_too_large"),
        (b"HELLO THERE\r\n\r\n", 400, "bad_request"),
        (post(b"{}", X_Pad="y" * 20_000), 431, "header_too_large"),
        (b"POST /api/v1/payment/webhook HTTP/1.1\r\nContent-Length: nine\r\n\r\n", 400, None),
    ]
    for raw, status, code in cases:
        stream = await on.connect()
        with contextlib.suppress(trio.BrokenResourceError):
            await stream.send_all(raw)  # the server may close before a huge request is written
        (reply,) = await replies(stream)  # then the server closes
        assert reply.status == status, raw[:60]
        assert reply.body["success"] is False and reply.body["message"]
        if code is not None:
            assert reply.body["error"] == code
        assert reply.headers["connection"] == "close"
        await stream.aclose()
    assert on.stub.told == []


async def test_a_client_that_waits_for_100_continue_gets_it(nursery: trio.Nursery) -> None:
    on = await listening(nursery)
    stream = await on.connect()
    body = b'{"invoice_id": "INV-20261203-000001"}'
    head, _, _ = post(body, Expect="100-continue").partition(b"\r\n\r\n")
    await stream.send_all(head + b"\r\n\r\n")
    with trio.fail_after(BOUND_S):
        assert (await stream.receive_some(65536)).startswith(b"HTTP/1.1 100 ")
    await stream.send_all(body)
    (reply,) = await replies(stream, 1)
    assert (reply.status, reply.body["size"]) == (200, len(body))


async def test_slow_senders_and_idle_connections_are_closed(nursery: trio.Nursery) -> None:
    on = await listening(nursery, Limits(read_s=0.3, idle_s=0.3))
    slow = await on.connect()
    await slow.send_all(post(b'{"a": 1}')[:-3])  # the body's last bytes never come
    idle = await on.connect()
    served = await on.connect()
    await served.send_all(post(b"{}"))
    (reply,) = await replies(served, 1)
    assert reply.status == 200
    assert await closed(slow) and await closed(idle) and await closed(served)
    assert len(on.stub.told) == 1


async def test_connections_over_the_limit_are_answered_503(nursery: trio.Nursery) -> None:
    on = await listening(nursery, Limits(max_connections=2))
    first, second = await on.connect(), await on.connect()
    await first.send_all(post(b"{}"))
    await second.send_all(post(b"{}"))
    assert [r.status for r in await replies(first, 1) + await replies(second, 1)] == [200, 200]
    third = await on.connect()
    (busy,) = await replies(third)
    assert (busy.status, busy.body["error"], busy.headers["retry-after"]) == (
        503,
        "service_unavailable",
        "1",
    )
    await first.send_all(post(b"{}", Connection="close"))  # a place comes free
    assert (await replies(first))[0].status == 200
    fourth = await on.connect()
    await fourth.send_all(post(b"{}"))
    assert (await replies(fourth, 1))[0].status == 200


async def test_shutdown_finishes_answers_in_progress_and_closes_the_rest(
    nursery: trio.Nursery,
) -> None:
    on = await listening(nursery)
    on.stub.hold = trio.Event()
    busy, idle = await on.connect(), await on.connect()
    await busy.send_all(post(b"{}"))
    with trio.fail_after(BOUND_S):
        await on.stub.entered.wait()
    on.shutdown.set()
    assert await closed(idle)
    on.stub.hold.set()
    (reply,) = await replies(busy)  # answered, then closed
    assert (reply.status, reply.headers["connection"]) == (200, "close")
    with trio.fail_after(BOUND_S):
        await on.stopped.wait()
    try:
        late = await on.connect()
    except OSError:
        return  # no one listens any more
    assert await closed(late)
