"""An in-memory connection pair for the sans-I/O conversations (h11's ``ConnectionPair``).

Two endpoints, "client" and "server", joined by a fake network: a message one
side sends is encoded to bytes with ``protocol.encode_message``, cut into
pieces of ``chunk`` bytes (1 cuts every frame byte by byte), and fed to the
other side's ``protocol.FrameDecoder``: the same encoder and decoder
production uses, with no socket, thread or clock. ``log`` keeps every
message that crossed, in order, as (sender, message).
"""

from __future__ import annotations

from collections import deque

from swift import protocol
from swift.protocol import DataFrame, Message

SIDES = ("client", "server")


class ConnectionPair:
    def __init__(self, chunk: int = 1 << 20):
        self.chunk = chunk
        self._decoders = {side: protocol.FrameDecoder() for side in SIDES}
        self._inbox: dict[str, deque] = {side: deque() for side in SIDES}
        self.log: list[tuple[str, Message | DataFrame]] = []

    @staticmethod
    def other(side: str) -> str:
        return SIDES[1 - SIDES.index(side)]

    def send(self, sender: str, *items: Message | DataFrame | bytes | memoryview) -> None:
        """Put messages (or raw data blocks, as data frames) on the wire towards the other side."""
        receiver = self.other(sender)
        for item in items:
            if isinstance(item, Message):
                raw = protocol.encode_message(item)
            else:
                payload = item.payload if isinstance(item, DataFrame) else item
                raw = protocol.encode_data(payload)
            for pos in range(0, len(raw), self.chunk):
                for frame in self._decoders[receiver].feed(raw[pos:pos + self.chunk]):
                    msg = protocol.parse_frame(frame)
                    self._inbox[receiver].append(msg)
                    self.log.append((sender, msg))

    def send_raw(self, sender: str, raw: bytes) -> None:
        """Bytes that need not be a valid frame; decoding errors surface in ``receive``."""
        receiver = self.other(sender)
        try:
            for frame in self._decoders[receiver].feed(raw):
                self._inbox[receiver].append(protocol.parse_frame(frame))
        except protocol.ProtocolError as exc:
            self._inbox[receiver].append(exc)

    def receive(self, side: str) -> list:
        """Everything that arrived at ``side`` and was not yet taken (errors included)."""
        out = list(self._inbox[side])
        self._inbox[side].clear()
        return out

    def sent_by(self, side: str) -> list[str]:
        """The type names of what ``side`` sent, in order."""
        return [type(m).__name__ for s, m in self.log if s == side]


def run_handshake(pair: ConnectionPair, client, server) -> dict:
    """Drive a ClientHandshake and a ServerHandshake to the end over ``pair``.

    Returns {"client": final step, "server": final step}; a side that never
    finished (the other stopped first, like a closed connection) gets the
    step of ``connection_lost`` where it has one, else None.
    """
    final: dict = {"client": None, "server": None}
    machines = {"client": client, "server": server}

    def perform(side: str, step) -> None:
        pair.send(side, *step.send)
        if step.done or step.failure is not None:
            final[side] = step

    perform("client", client.start())
    for _ in range(10):  # a handshake is at most four messages
        moved = False
        for side in SIDES:
            for item in pair.receive(side):
                if final[side] is not None:
                    continue  # a finished side reads nothing more: the connection is closed
                moved = True
                machine = machines[side]
                if isinstance(item, protocol.ProtocolError):
                    perform(side, machine.bad_frame(item))
                else:
                    perform(side, machine.receive(item))
        if not moved:
            break
    for side in SIDES:
        machine = machines[side]
        if final[side] is None and hasattr(machine, "connection_lost") \
                and machine.state not in ("done", "failed") and final[pair.other(side)] is not None:
            final[side] = machine.connection_lost("the connection closed")
    return final
