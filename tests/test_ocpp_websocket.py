"""The OCPP door's WebSocket (cpms.ocpp.websocket) against a client written with wsproto over a
real TCP socket: messages whole however they are fragmented, the client's pings and close
answered, every refusal closed with its RFC 6455 code, and a read cancelled half-way losing
nothing."""

from __future__ import annotations

import contextlib
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio
import trio.testing
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from cpms.ocpp.upgrade import BadUpgrade, Upgrade, parse_upgrade
from cpms.ocpp.websocket import ServerWebSocket, server_frame

Served = Callable[[ServerWebSocket], Awaitable[None]]


class Client:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.pending: list[Event] = []

    async def send(self, event: Event) -> None:
        await self.stream.send_all(self.ws.send(event))

    async def next_event(self) -> Event:
        with trio.fail_after(10):
            while not self.pending:
                data = await self.stream.receive_some(65536)
                self.ws.receive_data(data or None)
                self.pending.extend(self.ws.events())
        return self.pending.pop(0)


@asynccontextmanager
async def served(body: Served, max_message: int = 1024) -> AsyncIterator[Client]:
    """A server whose one connection is accepted (subprotocol ocpp1.6) then given to ``body``;
    the client, upgraded."""
    async with trio.open_nursery() as nursery:

        async def connection(stream: trio.SocketStream) -> None:
            ws = ServerWebSocket(stream, max_message=max_message)
            request = await ws.upgrade_request()
            assert request is not None
            assert request.subprotocols == ["ocpp1.6"]
            await ws.accept("ocpp1.6")
            await body(ws)

        listeners = await nursery.start(partial(trio.serve_tcp, connection, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        client = Client(await trio.open_tcp_stream("127.0.0.1", port))
        await client.send(Request(host="127.0.0.1", target="/ws/CP-1", subprotocols=["ocpp1.6"]))
        accepted = await client.next_event()
        assert isinstance(accepted, AcceptConnection) and accepted.subprotocol == "ocpp1.6"
        yield client
        nursery.cancel_scope.cancel()


async def test_messages_arrive_whole_and_pings_are_answered() -> None:
    got: list[str | bytes | None] = []

    async def body(ws: ServerWebSocket) -> None:
        for _ in range(3):
            got.append(await ws.receive())
        await ws.send('[3,"1",{}]')

    async with served(body) as client:
        await client.send(TextMessage("[2,", message_finished=False))
        await client.send(Ping(b"are you there"))  # between a message's fragments, as allowed
        await client.send(TextMessage('"1","Heartbeat",{}]'))
        pong = await client.next_event()
        assert isinstance(pong, Pong) and pong.payload == b"are you there"
        await client.send(BytesMessage(b"\x00\x01"))
        await client.send(TextMessage("й" * 100))  # a two-byte length, UTF-8
        answer = await client.next_event()
        assert isinstance(answer, TextMessage) and answer.data == '[3,"1",{}]'
    assert got == ['[2,"1","Heartbeat",{}]', b"\x00\x01", "й" * 100]


async def test_the_clients_close_is_answered_and_ends_the_conversation() -> None:
    after: list[object] = []

    async def body(ws: ServerWebSocket) -> None:
        after.append(await ws.receive())
        after.append(ws.open)
        with pytest.raises(trio.BrokenResourceError):
            await ws.send("[]")
        after.append(await ws.receive())  # still the end, asked again

    async with served(body) as client:
        await client.send(CloseConnection(1001, "going away"))
        answer = await client.next_event()
        assert isinstance(answer, CloseConnection) and answer.code == 1001
    assert after == [None, False, None]


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (struct.pack("!BBH4x", 0x81, 0x80 | 126, 2000) + b"x" * 2000, 1009),  # masked by zeros
        (server_frame(b"[2,\xff]"), 1002),  # a client's frame must be masked
    ],
)
async def test_a_message_too_big_or_unmasked_is_closed_with_its_code(
    frame: bytes, code: int
) -> None:
    ended: list[str | bytes | None] = []

    async def body(ws: ServerWebSocket) -> None:
        ended.append(await ws.receive())

    async with served(body) as client:
        await client.stream.send_all(frame)
        close = await client.next_event()
        assert isinstance(close, CloseConnection) and close.code == code
    assert ended == [None]


async def test_text_that_is_not_utf8_is_closed_with_1007() -> None:
    async def body(ws: ServerWebSocket) -> None:
        assert await ws.receive() is None

    async with served(body) as client:
        mask = b"\x00\x00\x00\x00"  # a masked frame by hand: wsproto sends only good UTF-8
        await client.stream.send_all(bytes((0x81, 0x80 | 2)) + mask + b"\xc3\x28")
        close = await client.next_event()
        assert isinstance(close, CloseConnection) and close.code == 1007


async def test_a_read_cancelled_half_way_loses_nothing() -> None:
    got: list[str | bytes | None] = []
    reading, half_read = trio.CancelScope(), trio.Event()

    async def body(ws: ServerWebSocket) -> None:
        with reading:  # the first half arrives, then the read is cancelled (mail for the actor)
            got.append(await ws.receive())
        half_read.set()
        got.append(await ws.receive())

    async with served(body) as client:
        frame = client.ws.send(TextMessage('[2,"7","Heartbeat",{}]'))
        await client.stream.send_all(frame[:9])
        await trio.testing.wait_all_tasks_blocked(cushion=0.05)  # the half is read and kept
        reading.cancel()
        await half_read.wait()
        await client.stream.send_all(frame[9:])
        await client.send(CloseConnection(1000))
        assert isinstance(await client.next_event(), CloseConnection)
    assert got == ['[2,"7","Heartbeat",{}]']


async def test_the_servers_close_waits_for_the_clients() -> None:
    closed = trio.Event()

    async def body(ws: ServerWebSocket) -> None:
        await ws.aclose(1000, "replaced by a new connection")
        closed.set()

    async with served(body) as client:
        close = await client.next_event()
        assert isinstance(close, CloseConnection)
        assert (close.code, close.reason) == (1000, "replaced by a new connection")
        await trio.testing.wait_all_tasks_blocked()
        assert not closed.is_set()  # the server waits for the client's close frame
        await client.send(close.response())
        with trio.fail_after(10):
            await closed.wait()
        assert await client.stream.receive_some(10) == b""  # then drops TCP


async def test_what_is_not_an_upgrade_is_refused() -> None:
    requests: list[Request | None] = []

    async def serve(stream: trio.SocketStream) -> None:
        requests.append(await ServerWebSocket(stream, max_message=1024).upgrade_request())
        await stream.aclose()

    async def answer_to(head: bytes) -> bytes:
        async with await trio.open_tcp_stream("127.0.0.1", port) as plain:
            with trio.fail_after(10):
                with contextlib.suppress(trio.BrokenResourceError):  # cut off while sending
                    await plain.send_all(head)
                received = b""
                while chunk := await plain.receive_some(4096):
                    received += chunk
                return received

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, serve, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        plain_get = await answer_to(b"GET /ws/CP-1 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert plain_get.startswith(b"HTTP/1.1 400 ")
        endless = await answer_to(b"GET /ws/CP-1 HTTP/1.1\r\n" + b"X-Pad: y\r\n" * 2000)
        assert not endless.startswith(b"HTTP/1.1 101")  # a head over 16 KB is never upgraded
        nursery.cancel_scope.cancel()
    assert requests == [None, None]


async def test_a_refusal_carries_its_status_headers_and_body() -> None:
    async def serve(stream: trio.SocketStream) -> None:
        ws = ServerWebSocket(stream, max_message=1024)
        assert await ws.upgrade_request() is not None
        await ws.reject(429, body=b"slow down", headers=[(b"Retry-After", b"7")])
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, serve, 0, host="127.0.0.1"))
        client = Client(
            await trio.open_tcp_stream("127.0.0.1", listeners[0].socket.getsockname()[1])
        )
        await client.send(Request(host="x", target="/ws/CP-1", subprotocols=["ocpp1.6"]))
        refusal = await client.next_event()
        assert isinstance(refusal, RejectConnection) and refusal.status_code == 429
        assert (b"retry-after", b"7") in refusal.headers
        body = await client.next_event()
        assert isinstance(body, RejectData) and body.data == b"slow down"
        nursery.cancel_scope.cancel()


GOOD = [
    b"GET /ws/CP-1?x=1 HTTP/1.1",
    b"Host: cpms.example:9000",
    b"Upgrade: WebSocket",
    b"Connection: keep-alive, Upgrade",
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    b"Sec-WebSocket-Version: 13",
    b"Sec-WebSocket-Protocol: ocpp2.0.1",
    b"sec-websocket-protocol:ocpp1.6 ,",
    b"Authorization:  Basic Q1AtMTpzZWNyZXQ=\t",
]


def test_an_upgrade_request_is_read_field_by_field() -> None:
    request = parse_upgrade(b"\r\n".join(GOOD))
    assert request.target == "/ws/CP-1?x=1"
    assert request.subprotocols == ["ocpp2.0.1", "ocpp1.6"]  # over two lines, in order
    assert request.header(b"authorization") == b"Basic Q1AtMTpzZWNyZXQ="
    assert request.header(b"x-missing") is None
    assert request.key == b"dGhlIHNhbXBsZSBub25jZQ=="


def _with(line: int, text: bytes | None) -> bytes:
    """GOOD with line ``line`` replaced by ``text`` (None: left out)."""
    lines = [*GOOD[:line], *([] if text is None else [text]), *GOOD[line + 1 :]]
    return b"\r\n".join(lines)


@pytest.mark.parametrize(
    ("head", "status", "says"),
    [
        (_with(0, b"POST /ws/CP-1 HTTP/1.1"), 405, "is a GET"),
        (_with(0, b"GET /ws/CP-1 HTTP/1.0"), 400, "HTTP/1.1"),
        (_with(0, b"GET http://x/ws/CP-1 HTTP/1.1"), 400, "request line"),
        (_with(0, b"GET /ws/CP 1 HTTP/1.1"), 400, "request line"),
        (_with(1, None), 400, "Host"),
        (_with(1, b"Host: a\r\nHost: b"), 400, "Host"),
        (_with(2, b"Upgrade: h2c"), 400, "Upgrade: websocket"),
        (_with(3, b"Connection: keep-alive"), 400, "Connection: Upgrade"),
        (_with(4, None), 400, "Sec-WebSocket-Key"),
        (_with(4, b"Sec-WebSocket-Key:"), 400, "Sec-WebSocket-Key"),
        (_with(5, b"Sec-WebSocket-Version: 8"), 426, "Version 13"),
        (_with(6, b"Content-Length: 4"), 400, "no body"),
        (_with(6, b"Transfer-Encoding: chunked"), 400, "no body"),
        (_with(6, b"X-Bad : spaced"), 400, "malformed"),
        (_with(6, b" folded continuation"), 400, "malformed"),
        (_with(6, b"no colon at all"), 400, "malformed"),
        (_with(6, b"X-Bad: a\x01b"), 400, "malformed"),
        (_with(6, b"X-Pad: 1\r\n" * 64 + b"X-Pad: 1"), 431, "header lines"),
    ],
)
def test_what_is_not_a_websocket_upgrade_says_why(head: bytes, status: int, says: str) -> None:
    with pytest.raises(BadUpgrade, match=says) as bad:
        parse_upgrade(head)
    assert bad.value.status == status


async def test_a_refusal_of_another_version_names_13_and_frames_sent_early_are_read() -> None:
    answers: list[bytes] = []
    got: list[str | bytes | None] = []

    async def serve(stream: trio.SocketStream) -> None:
        ws = ServerWebSocket(stream, max_message=1024)
        if await ws.upgrade_request() is not None:
            await ws.accept("ocpp1.6")
            got.append(await ws.receive())
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, serve, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        for head in (_with(5, b"Sec-WebSocket-Version: 8"), b"\r\n".join(GOOD)):
            async with await trio.open_tcp_stream("127.0.0.1", port) as client:
                early = Connection(ConnectionType.CLIENT)  # a frame right behind the head
                frame = early.send(TextMessage('[2,"1","Heartbeat",{}]'))
                await client.send_all(head + b"\r\n\r\n" + frame)
                with trio.fail_after(10):
                    answers.append(await client.receive_some(4096))
                    while chunk := await client.receive_some(4096):  # to the server's close
                        answers[-1] += chunk
        nursery.cancel_scope.cancel()
    assert answers[0].startswith(b"HTTP/1.1 426 ")
    assert b"\r\nSec-WebSocket-Version: 13\r\n" in answers[0]
    assert answers[0].endswith(b"\r\n\r\nSec-WebSocket-Version 13 is required")
    assert answers[1].startswith(b"HTTP/1.1 101 ")
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in answers[1]  # RFC 6455
    assert got == ['[2,"1","Heartbeat",{}]']


async def test_a_head_sent_in_pieces_is_read_whatever_the_cuts() -> None:
    """The end of the head is found however the request is cut (its blank line split across
    reads too), and a head trickled past 16 KB is still dropped."""
    requests: list[Upgrade | None] = []
    head = b"\r\n".join(GOOD) + b"\r\n\r\n"

    async def serve(stream: trio.SocketStream) -> None:
        requests.append(await ServerWebSocket(stream, max_message=1024).upgrade_request())
        await stream.aclose()

    async def trickle(data: bytes, cuts: list[int]) -> None:
        async with await trio.open_tcp_stream("127.0.0.1", port) as client:
            with contextlib.suppress(trio.BrokenResourceError):  # dropped while sending
                for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True):
                    await client.send_all(data[start:end])
                    await trio.testing.wait_all_tasks_blocked()  # each piece read alone
            answer = b""
            with trio.fail_after(10):
                while chunk := await client.receive_some(4096):  # to the server's close
                    answer += chunk
            assert answer == b""  # serve() only reads the request (or drops it)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, serve, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        blank = len(head) - 4
        for cuts in ([blank + 1], [blank + 2], [blank + 3], list(range(1, len(head)))):
            await trickle(head, cuts)
        padded = b"GET /ws/CP-1 HTTP/1.1\r\n" + b"X-Pad: y\r\n" * 1700
        await trickle(padded + b"\r\n", list(range(512, len(padded), 512)))
        nursery.cancel_scope.cancel()
    assert [request is not None and request.key for request in requests] == [
        b"dGhlIHNhbXBsZSBub25jZQ==",
    ] * 4 + [False]
