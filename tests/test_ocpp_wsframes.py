"""The OCPP door's frame reader (cpms.ocpp.wsframes) against frames made by wsproto's client:
any messages, fragmented anyhow, with pings between, fed in any chunks, come out whole and in
order; every breach of RFC 6455 a client can commit ends with its close code."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage

from cpms.ocpp import wsframes
from cpms.ocpp.wsframes import Breach, ClientFrames, Close, Message, unmask

MASK = b"\x01\x02\x03\x04"


def masked(first: int, payload: bytes, length: bytes | None = None) -> bytes:
    """A client's frame by hand: ``first`` byte, masked ``payload`` (``length``: its field)."""
    if length is None:
        length = bytes((0x80 | len(payload),)) if len(payload) < 126 else None
        if length is None:
            length = bytes((0x80 | 126,)) + struct.pack("!H", len(payload))
    return bytes((first,)) + length + MASK + unmask(payload, MASK)


messages = st.one_of(st.text(max_size=300), st.binary(max_size=300))


@given(
    st.lists(st.tuples(messages, st.integers(1, 4), st.booleans()), max_size=8),
    st.lists(st.integers(1, 50), min_size=1, max_size=20),
)
def test_messages_come_out_whole_however_they_are_cut(
    sent: list[tuple[str | bytes, int, bool]], cuts: list[int]
) -> None:
    client = Connection(ConnectionType.CLIENT)
    wire, expected = b"", []
    for number, (message, pieces, ping) in enumerate(sent):
        step = max(1, -(-len(message) // pieces))
        parts = [message[i : i + step] for i in range(0, len(message), step)] or [message]
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            if isinstance(part, str):
                wire += client.send(TextMessage(part, message_finished=last))
            else:
                wire += client.send(BytesMessage(part, message_finished=last))
            if ping and index == 0:  # a control frame between fragments, as allowed
                wire += client.send(Ping(f"p{number}".encode()))
        if ping:
            expected.append(wsframes.Ping(f"p{number}".encode()))
        expected.append(Message(message))
    wire += client.send(CloseConnection(1001, "bye"))
    expected.append(Close(1001, "bye"))

    reader, got, at = ClientFrames(max_message=10_000), [], 0
    for cut in [*cuts, len(wire)]:
        got += reader.feed(wire[at : at + cut])
        at += cut
    while at < len(wire):
        got += reader.feed(wire[at:])
        at = len(wire)
    # a ping may come out before its message's first fragment completes the message: compare
    # the messages in order, and the pings in order
    assert [e for e in got if isinstance(e, Message)] == [
        e for e in expected if isinstance(e, Message)
    ]
    assert [e for e in got if isinstance(e, wsframes.Ping)] == [
        e for e in expected if isinstance(e, wsframes.Ping)
    ]
    assert got[-1] == Close(1001, "bye")
    assert reader.feed(masked(0x81, b"after the close")) == []


@pytest.mark.parametrize(
    ("wire", "code", "says"),
    [
        (masked(0x81, b"x")[:1] + b"\x01x", 1002, "masked"),
        (masked(0xC1, b"x"), 1002, "reserved bits"),
        (masked(0x83, b"x"), 1002, "reserved opcode 3"),
        (masked(0x8B, b"x"), 1002, "reserved opcode 11"),
        (masked(0x09, b"x"), 1002, "control frame"),  # a ping in fragments
        (masked(0x89, b"x" * 126), 1002, "control frame"),
        (masked(0x80, b"x"), 1002, "continuation without"),
        (masked(0x01, b"a") + masked(0x81, b"b"), 1002, "inside a fragmented"),
        (masked(0x81, b"", bytes((0xFF,)) + (1 << 63).to_bytes(8)), 1002, "top bit"),
        (masked(0x81, b"\xc3\x28"), 1007, "not UTF-8"),
        (masked(0x01, b"\xc3") + masked(0x80, b"\x28"), 1007, "not UTF-8"),
        (masked(0x88, b"\x03"), 1002, "two bytes"),
        (masked(0x88, struct.pack("!H", 1005)), 1002, "close code 1005"),
        (masked(0x88, struct.pack("!H", 2000)), 1002, "close code 2000"),
        (masked(0x88, struct.pack("!H", 1000) + b"\xff"), 1007, "close reason"),
        (masked(0x81, b"", bytes((0xFE,)) + struct.pack("!H", 2000)), 1009, "at most 1024"),
        (masked(0x01, b"x" * 1000) + masked(0x80, b"x" * 25), 1009, "at most 1024"),
    ],
)
def test_every_breach_ends_with_its_close_code(wire: bytes, code: int, says: str) -> None:
    reader = ClientFrames(max_message=1024)
    events = reader.feed(wire)
    assert isinstance(events[-1], Breach)
    assert events[-1].code == code and says in events[-1].reason
    assert reader.feed(masked(0x81, b"more")) == []  # nothing is read after it


def test_what_came_before_a_breach_is_kept_and_a_bare_close_has_no_code() -> None:
    reader = ClientFrames(max_message=1024)
    events = reader.feed(masked(0x81, b'[2,"1","Heartbeat",{}]') + masked(0xC1, b"x"))
    assert events[0] == Message('[2,"1","Heartbeat",{}]') and isinstance(events[1], Breach)
    assert ClientFrames(1024).feed(masked(0x88, b"") + masked(0x8A, b"pong")) == [Close(None, "")]
    big = "ы" * 40_000  # a 64-bit length field, unmasked in one go
    wire = bytes((0x81, 0x80 | 127)) + len(big.encode()).to_bytes(8) + MASK
    assert ClientFrames(100_000).feed(wire + unmask(big.encode(), MASK)) == [Message(big)]
