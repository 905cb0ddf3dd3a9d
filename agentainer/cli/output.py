"""The CLI's output: aligned human tables and lines, ``--json`` for scripts, errors on stderr."""

import json
import re
import sys
from datetime import datetime, timezone
from typing import Any

PROG = "agentainer"  # the command's name, as its errors and usage show it
HINTS = {
    "unauthorized": "set AGENTAINER_TOKEN or --token (agentainer token prints the admin one)",
    "image_not_found": "list local images with: docker images, or deploy with --pull",
    "image_pull_failed": "check the image name, and that the Docker daemon can reach its "
                         "registry (docker pull IMAGE shows the same error)",
    "invalid_state": "agentainer inspect AGENT shows its status",
}


# C0 controls but tab and newline, DEL, and C1 controls (CSI and friends start escapes too)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """Return ``text`` with control characters shown as ``\\xNN``.

    APPSEC: bodies, paths and headers come from callers and agents; printed raw, an escape
    sequence could rewrite the user's terminal.
    """
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


class Output:
    """Human or JSON output on stdout; errors on stderr."""

    def __init__(self, *, as_json: bool, stdout: Any = None, stderr: Any = None) -> None:
        self._json = as_json
        self._out = stdout or sys.stdout
        self._err = stderr or sys.stderr

    def line(self, text: str) -> None:
        """Print one human line (control characters escaped)."""
        print(printable(text), file=self._out)

    def json(self, data: Any) -> None:
        """Print ``data`` as indented JSON with sorted keys."""
        print(json.dumps(data, indent=2, sort_keys=True), file=self._out)

    def agent_line(self, data: Any, text: str) -> None:
        """Print ``data`` as JSON with --json, else the human ``text``."""
        if self._json:
            self.json(data)
        else:
            self.line(text)

    def listing(self, data: Any, header: tuple[str, ...], rows: list[tuple[str, ...]], *,
                empty: str) -> None:
        """Print ``data`` as JSON with --json, else ``rows`` as a table (``empty`` when
        there are none)."""
        if self._json:
            self.json(data)
        elif not rows:
            self.line(empty)
        else:
            self.table(header, rows)

    def table(self, header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
        """Print ``rows`` under ``header`` in left-aligned columns."""
        cells = [[printable(str(cell)).replace("\n", "\\n") for cell in row]
                 for row in (header, *rows)]
        widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
        for row in cells:
            print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip(),
                  file=self._out)

    def raw(self, chunk: bytes) -> None:
        """Write ``chunk`` as it is (bytes when stdout has a buffer) and flush."""
        buffer = getattr(self._out, "buffer", None)
        if buffer is not None:
            buffer.write(chunk)
        else:
            self._out.write(chunk.decode("utf-8", "replace"))
        self._out.flush()

    def error(self, message: str, code: str | None = None) -> None:
        """Print an error on stderr, with its code and a hint when one is known."""
        print(printable(f"{PROG}: {message}" + (f" [{code}]" if code else "")),
              file=self._err)
        if code in HINTS:
            print(f"hint: {HINTS[code]}", file=self._err)


def show_record(record: dict[str, Any], out: Output, *, as_json: bool) -> None:
    """Print one journaled request: every field, its headers, body and response."""
    if as_json:
        out.json(record)
        return
    for key in ("id", "agent", "method", "path", "query", "status", "attempts", "error",
                "idempotency_key"):
        out.line(f"{key + ':':<17} {record.get(key) or '-'}")
    out.line(f"{'arrived:':<17} {utc_time(record['created_at'])}")
    out.line(f"{'updated:':<17} {utc_time(record['updated_at'])}")
    for name, value in record.get("headers", []):
        out.line(f"{'header:':<17} {name}: {value}")
    out.line(f"{'body:':<17} {record.get('body') or '-'}")
    if record.get("resp_status"):
        out.line(f"{'response:':<17} {record['resp_status']}"
                 + (" (truncated)" if record.get("resp_truncated") else ""))
        out.line(record.get("resp_body") or "")


def yes_no(value: bool | None) -> str:
    """Return ``yes``, ``no``, or ``-`` for None."""
    return "-" if value is None else ("yes" if value else "no")


def human_bytes(count: int) -> str:
    """Return a byte count in B, KiB, MiB or GiB."""
    size = float(count)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def utc_time(millis: int) -> str:
    """Return Unix milliseconds as a UTC ISO-8601 time to the second."""
    return datetime.fromtimestamp(millis / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def cut(text: str, width: int) -> str:
    """Return ``text`` cut to ``width`` characters, ending in '…' when cut."""
    return text if len(text) <= width else text[:width - 1] + "…"
