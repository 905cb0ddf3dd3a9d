"""What the API shows of a journaled request: configured headers and query values redacted.

APPSEC: the journal keeps what the caller sent (replay sends it again); only what is shown
is redacted, so a token with access to the journal can replay a secret but never read it.
"""

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote_plus

REDACTED = "[redacted]"
# NOTE: some frameworks (Rack before 3, older Python) also split a query at ';'
_SEPARATOR = re.compile(r"([&;])")
# NOTE: 'user[password]' and 'token[]' are 'password' and 'token' to Rails, PHP and qs
_NAME_PART = re.compile(r"[^\[\]]+")


class Redactor:
    """Redacts header values and query parameter values by name (case-insensitive)."""

    def __init__(self, headers: Iterable[str], params: Iterable[str]) -> None:
        self._headers = frozenset(name.lower() for name in headers)
        self._params = frozenset(name.lower() for name in params)

    def headers(self, pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        """Return ``pairs`` with the values of the configured header names redacted."""
        return [(name, REDACTED if name.lower() in self._headers else value)
                for name, value in pairs]

    def query(self, query: str) -> str:
        """Return a raw query string with the configured parameters' values redacted.

        Keys stay as sent; a key is matched percent- and ``+``-decoded, so
        ``%74oken=`` is ``token=`` too, and by each of its bracketed parts
        (``user[password]=``, ``token[]=``). Parameters are split at ``&`` and ``;``.

        APPSEC: a secret is hidden however the agent's framework parses the query.
        """
        parts = []
        for part in _SEPARATOR.split(query):
            key, has_value, _ = part.partition("=")
            names = _NAME_PART.findall(unquote_plus(key).lower())
            if has_value and not self._params.isdisjoint(names):
                part = f"{key}={REDACTED}"
            parts.append(part)
        return "".join(parts)

    def record(self, record: dict[str, Any]) -> dict[str, Any]:
        """Return a copy of a journal record (or summary) as the API shows it."""
        view = dict(record)
        for key in ("headers", "resp_headers"):
            if view.get(key):
                view[key] = self.headers(view[key])
        if view.get("query"):
            view["query"] = self.query(view["query"])
        return view
