"""Converters from user-written values to numbers.

Each takes a string (or a number) and returns a plain value, raising ``ValueError``
with a message that names the bad value; callers add where the value came from.
"""

import math
import re
from datetime import datetime

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600}

_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_MEMORY_POWERS = {"b": 0, "k": 1, "m": 2, "g": 3, "t": 4}

NANO = 1_000_000_000
# RFC 9110 §5.1: a field name is a token
HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+").fullmatch


def parse_duration(value: str | int | float) -> float:
    """Return seconds from ``30``, ``30s``, ``500ms``, ``5m`` or ``1h``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"{value!r} is not a duration (examples: 30s, 500ms, 5m, 1h)")
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{value!r} is not a finite, non-negative duration")
    return seconds


def parse_cpu(value: str | int | float) -> int:
    """Return nanoCPUs from ``1``, ``0.5``, ``500m`` or a nanoCPU count like ``1000000000``.

    A bare number up to 1024 means cores; a larger whole number means nanoCPUs.
    """
    text = str(value).strip().lower()
    try:
        if text.endswith("m"):
            nano = int(float(text[:-1]) * 1_000_000)
        else:
            number = float(text)
            nano = int(number) if number.is_integer() and number > 1024 else int(number * NANO)
    except (ValueError, OverflowError):
        raise ValueError(f"{value!r} is not a CPU amount (examples: 1, 0.5, 500m)") from None
    if nano < 1_000_000:
        raise ValueError(f"{value!r} is too small a CPU amount (at least 1m)")
    return nano


def parse_size(value: str | int, *, what: str = "size") -> int:
    """Return bytes from ``512k``, ``10m``, ``1Gi``, ``1g`` or a byte count (binary units)."""
    match = None if isinstance(value, bool) else _MEMORY.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a {what} (examples: 512m, 1g, 536870912)")
    unit = (match.group(2) or "b").lower()
    try:
        return int(float(match.group(1)) * 1024 ** _MEMORY_POWERS[unit[0]])
    except OverflowError:
        raise ValueError(f"{value!r} is too large a {what}") from None


def parse_memory(value: str | int) -> int:
    """Return bytes from ``512m``, ``512Mi``, ``1g``, ``1G`` or a byte count.

    Units are binary (1k = 1024), as Docker reads them; a trailing ``b`` is allowed.
    """
    size = parse_size(value, what="memory size")
    if size < 6 * 1024 * 1024:
        raise ValueError(f"{value!r} is below Docker's minimum memory limit of 6m")
    return size


def parse_bool(value: str | bool) -> bool:
    """Return a bool from ``true/false``, ``yes/no``, ``on/off`` or ``1/0``."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{value!r} is not a boolean (use true or false)")


def _whole(value: str | int | float) -> int:
    """Return an int from an int, a whole float (JSON's ``162.0``) or decimal text; other
    floats and booleans are refused."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"{value!r} is not a whole number")
    return int(value)


def parse_port(value: str | int) -> int:
    """Return a TCP port number between 1 and 65535."""
    try:
        port = _whole(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise ValueError(f"{value!r} is not a port number between 1 and 65535")
    return port


def parse_count(value: str | int, *, minimum: int = 0) -> int:
    """Return a whole number of at least ``minimum``."""
    try:
        number = _whole(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a whole number") from None
    if number < minimum:
        raise ValueError(f"{value!r} must be at least {minimum}")
    return number


def parse_positive_int(value: str | int) -> int:
    """Return a whole number of at least 1."""
    return parse_count(value, minimum=1)


def parse_names(value: str) -> tuple[str, ...]:
    """Return the names of a ``,``-separated list (blanks dropped)."""
    return tuple(part.strip() for part in str(value).split(",") if part.strip())


def parse_header_names(value: str) -> tuple[str, ...]:
    """Return the header names of a ``,``-separated list."""
    names = parse_names(value)
    for name in names:
        if not HEADER_NAME(name):
            raise ValueError(f"{name!r} is not a header name")
    return names


# NOTE: what the API's logs ``since`` takes, fully: a duration ago, or a Unix time (a bare
# number from 1e9 on); ISO-8601 is the CLI's to convert (Docker's API takes Unix times too)
SINCE = re.compile(r"^([0-9]{1,9}(\.[0-9]{1,3})?(ms|s|m|h)|[0-9]{1,11}(\.[0-9]{1,6})?)$")


def parse_since(value: str, now: float) -> float:
    """Return a Unix time from a duration ago (``10m``) or a Unix time (``1700000000``).

    Raises:
        ValueError: anything else (:data:`SINCE` states it).
    """
    text = str(value)
    if not SINCE.match(text):
        raise ValueError(f"{value!r} is not a time (examples: 10m, 2h, 1700000000)")
    if text[-1].isdigit() and float(text) >= 1e9:
        return float(text)
    return max(0.0, now - parse_duration(text))


def since_param(value: str, now: float) -> str:
    """Return the API's ``since`` for what a user typed: also an ISO-8601 time.

    Raises:
        ValueError: none of a duration, a Unix time or ISO-8601.
    """
    if SINCE.match(value):
        return value
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise ValueError(f"{value!r} is not a time (examples: 10m, 2h, 1700000000, "
                         "2026-01-01T00:00:00Z)") from None
    # NOTE: a bare number below 1e9 means seconds ago; no container logged before 2001
    return f"{max(when, 1e9):.6f}"
