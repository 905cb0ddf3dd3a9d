"""Benchmark upstream: a minimal asyncio HTTP/1.1 keep-alive server (stdlib only).

Answers every request with the same small JSON body, as fast as one Python process can.
It parses requests incrementally, so partial reads and pipelined requests both work;
request bodies are consumed by Content-Length (or chunked transfer encoding) and ignored.

    PORT   listen port (default 8000); listens on 0.0.0.0
"""

import asyncio
import os
import signal

BODY = b'{"ok":true,"agent":"bench-upstream"}\n'
RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)
CLOSE_RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                  b"Content-Length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)
BAD_REQUEST = (b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n"
               b"Content-Length: 12\r\n\r\nbad request\n")
MAX_HEAD = 64 * 1024


class BadRequest(Exception):
    pass


class HTTPProtocol(asyncio.Protocol):
    """One connection: a byte buffer and a small state machine over it."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.body_left = 0          # Content-Length bytes still to skip
        self.chunked = False        # skipping a chunked body
        self.close_after = False    # the current request asked for Connection: close
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        out = []
        try:
            while not self.closed:
                if self.body_left:
                    take = min(self.body_left, len(self.buffer))
                    del self.buffer[:take]
                    self.body_left -= take
                    if self.body_left:
                        break                     # body continues in a later read
                    out.append(self._finish())
                    if self.close_after:
                        break
                    continue
                if self.chunked:
                    if not self._skip_chunks():
                        break
                    out.append(self._finish())
                    if self.close_after:
                        break
                    continue
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(self.buffer) > MAX_HEAD:
                        raise BadRequest()
                    break                         # head continues in a later read
                head = bytes(self.buffer[:end])
                del self.buffer[:end + 4]
                self._parse_head(head)
                if not self.body_left and not self.chunked:
                    out.append(self._finish())
                    if self.close_after:
                        break
        except (BadRequest, ValueError):
            out.append(BAD_REQUEST)
            self.close_after = True
            self.body_left = 0
            self.chunked = False
        if out:
            self.transport.write(b"".join(out))   # one write for a pipelined batch
        if self.close_after and not self.body_left and not self.chunked:
            self.closed = True
            self.transport.close()

    def _parse_head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        while lines and not lines[0]:
            lines.pop(0)                          # tolerate stray CRLF between requests
        if not lines:
            raise BadRequest()
        parts = lines[0].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            raise BadRequest()
        keep_alive = parts[2] == b"HTTP/1.1"
        length = 0
        chunked = False
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                raise BadRequest()
            name = name.strip().lower()
            value = value.strip().lower()
            if name == b"content-length":
                length = int(value)
                if length < 0:
                    raise BadRequest()
            elif name == b"transfer-encoding":
                chunked = value.endswith(b"chunked")
            elif name == b"connection":
                if b"close" in value:
                    keep_alive = False
                elif b"keep-alive" in value:
                    keep_alive = True
        self.close_after = not keep_alive
        self.chunked = chunked
        self.body_left = 0 if chunked else length

    def _skip_chunks(self) -> bool:
        """Consume chunked body bytes; True once the last chunk and trailers are gone."""
        while True:
            line_end = self.buffer.find(b"\r\n")
            if line_end < 0:
                return False
            size = int(bytes(self.buffer[:line_end]).split(b";")[0].strip() or b"x", 16)
            if size == 0:
                trailer_end = self.buffer.find(b"\r\n\r\n", line_end)
                if trailer_end < 0:
                    return False
                del self.buffer[:trailer_end + 4]
                self.chunked = False
                return True
            if len(self.buffer) < line_end + 2 + size + 2:
                return False
            del self.buffer[:line_end + 2 + size + 2]

    def _finish(self) -> bytes:
        return CLOSE_RESPONSE if self.close_after else RESPONSE


async def main() -> None:
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    port = int(os.environ.get("PORT") or 8000)
    server = await loop.create_server(HTTPProtocol, "0.0.0.0", port, backlog=1024,
                                      reuse_address=True)
    print(f"bench-upstream listening on 0.0.0.0:{port}", flush=True)
    async with server:
        await stop


if __name__ == "__main__":
    asyncio.run(main())
