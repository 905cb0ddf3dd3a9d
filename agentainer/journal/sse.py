"""Server-Sent Events, as far as resuming a captured stream needs: where each event ends.

A resumed event stream starts right after the event whose ``id`` field the client names
in ``Last-Event-ID`` (the WHATWG HTML "server-sent events" parsing rules: lines end in
CRLF, LF or CR; an event ends at a blank line; a line ``id: X`` or ``id:X`` sets its id;
an ``id`` holding NUL is ignored).
"""

import re

EVENT_STREAM = "text/event-stream"
# NOTE: a line and its end; a CR at the very end of what was fed may be the first half
# of a CRLF, so it is left for the next feed
_LINE = re.compile(rb"([^\r\n]*)(\r\n|\n|\r(?!\Z))")


def is_event_stream(headers: list[tuple[str, str]]) -> bool:
    """Tell whether a response's ``Content-Type`` is ``text/event-stream``."""
    return any(name.lower() == "content-type"
               and value.split(";", 1)[0].strip().lower() == EVENT_STREAM
               for name, value in headers)


class EventScanner:
    """Finds, in a stream fed chunk by chunk, the end of the event with a given id.

    ``end`` is the byte offset just past the blank line that ends that event, once fed
    (None before). Only the bytes of the line being read are kept.
    """

    def __init__(self, event_id: str) -> None:
        self._wanted = event_id.encode("utf-8")
        self._pending = b""   # an unfinished line
        self._at = 0          # the offset of _pending's first byte
        self._has_id = False  # the current event set the wanted id
        self.end: int | None = None

    def feed(self, data: bytes) -> int | None:
        """Scan ``data`` (the bytes after those fed before); return :attr:`end`."""
        if self.end is not None:
            return self.end
        buffer = self._pending + data
        position = 0
        # NOTE: the matches are contiguous: only the last line may lack its end
        for match in _LINE.finditer(buffer):
            position = match.end()
            line = match.group(1)
            if not line:
                if self._has_id:
                    self.end = self._at + position
                    return self.end
                continue
            name, colon, value = line.partition(b":")
            if name == b"id" and b"\0" not in value:
                value = value[1:] if colon and value.startswith(b" ") else value
                self._has_id = value == self._wanted
        self._pending = buffer[position:]
        self._at += position
        return None
