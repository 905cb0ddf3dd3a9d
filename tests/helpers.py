"""Shared test helpers: polling, free ports, process start-up, Redis URLs."""

import socket
import time
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

T = TypeVar("T")


def wait_for(condition: Callable[[], T], *, timeout: float = 30.0, interval: float = 0.1,
             message: str = "condition") -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = condition()
            if result:
                return result
        except Exception as ex:  # noqa: BLE001 - polled conditions may fail while waiting
            last_error = ex
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}"
                         + (f" (last error: {last_error!r})" if last_error else ""))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def with_password(url: str, password: str | None) -> str:
    """Return ``url`` carrying ``password`` (percent-encoded); unchanged for None."""
    if password is None:
        return url
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    user = quote(parts.username or "", safe="")
    return urlunsplit(parts._replace(netloc=f"{user}:{quote(password, safe='')}@{host}"))


class FakeLive:
    """A live capture (journal/live.py) that records what it would publish."""

    def __init__(self) -> None:
        self.published: list[tuple] = []

    def add(self, kept: bytes, *, cut: bool, left: int | None) -> None:
        self.published.append(("add", kept, cut, left))

    def end(self, outcome: str, size: int) -> None:
        self.published.append(("end", outcome, size))
