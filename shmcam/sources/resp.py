"""The two Redis commands a std-daq camera needs (SELECT, GET), spoken in RESP over a socket.

std-daq publishes each detector's stream address under the device name in Redis. A full
client (the `redis` package) would add a dependency to every node for one GET at camera
start; these few lines do it, and bound what they read from the server.
"""

from __future__ import annotations

import socket

DEFAULT_PORT = 6379
MAX_VALUE = 64 << 10  # a stream address is short: a larger reply is not std-daq's


class RedisError(RuntimeError):
    """Redis answered with an error, or with something that is not RESP."""


def _command(*words: str) -> bytes:
    parts = [f"*{len(words)}\r\n".encode()]
    for word in words:
        data = word.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _reply(stream) -> bytes | None:
    """One simple-string, error or bulk reply (None for nil)."""
    line = stream.readline(1024)
    if not line.endswith(b"\r\n"):
        raise RedisError(f"the server closed the connection or sent no RESP line: {line[:80]!r}")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest
    if kind == b"-":
        raise RedisError(rest.decode(errors="replace"))
    if kind == b"$":
        try:
            size = int(rest)
        except ValueError:
            raise RedisError(f"bad bulk length {rest[:40]!r}") from None
        if size < 0:
            return None
        if size > MAX_VALUE:
            raise RedisError(f"a value of {size} bytes is too large for a stream address")
        data = stream.read(size + 2)
        if len(data) != size + 2 or not data.endswith(b"\r\n"):
            raise RedisError("the server closed the connection in the middle of a value")
        return data[:-2]
    raise RedisError(f"unexpected reply {line[:80]!r}")


def redis_get(address: str, key: str, db: int | str = 0, timeout: float = 2.0) -> str | None:
    """GET key from database db of the Redis server at "host[:port]"; None if it has none."""
    host, colon, port = address.rpartition(":")
    host, port = (host, int(port)) if colon else (address, DEFAULT_PORT)
    with socket.create_connection((host, port), timeout=timeout) as connection:
        stream = connection.makefile("rb")
        if int(db):
            connection.sendall(_command("SELECT", str(int(db))))
            _reply(stream)
        connection.sendall(_command("GET", key))
        value = _reply(stream)
    return None if value is None else value.decode(errors="replace")
