"""The admin token: configured, or generated once into the data directory."""

import hashlib
import hmac
from pathlib import Path

from agentainer import secretfile

WHAT = "admin token"


def hash_token(token: str) -> str:
    """Return the at-rest form of a token (tokens are random, so a plain digest suffices)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def load_or_create(configured: str, path: Path, *, generate: bool = True) -> str:
    """Return the admin token, creating ``path`` (mode 0600) when none is configured.

    Several processes may start at once (supervisord starts every server process
    together); exactly one token wins and every process returns it.

    Args:
        generate: False: ``path`` is ``token_file``, which must exist (the servers of an
            external Redis's stack, on several hosts, share one token: a Docker secret).

    Raises:
        InvalidConfig: the token file cannot be read or written, or holds no usable token.
    """
    if configured:
        return configured
    if not generate:
        return secretfile.read_named(path, setting="token_file", what=WHAT,
                                     minimum=secretfile.MIN_LENGTH)
    return secretfile.load_or_create(path, what=WHAT)


def read(path: Path) -> str | None:
    """Return the token stored at ``path``, or None when there is no token file.

    Raises:
        InvalidConfig: the file cannot be read, or holds no usable token.
    """
    try:
        return secretfile.read_existing(path, what=WHAT)
    except FileNotFoundError:
        return None


def matches(token: str, expected_hash: str) -> bool:
    """Compare a presented token with a stored hash in constant time."""
    return hmac.compare_digest(hash_token(token), expected_hash)


# The header (and query parameter ``token``) carrying a resume token.
RESUME_TOKEN_HEADER = "X-Agentainer-Resume-Token"
_RESUME = b"agentainer resume token\0"


def resume_token(admin_token: str, request_id: str) -> str:
    """Return the capability to read one request's response (and no other's): an
    HMAC-SHA256 of the request ID, keyed by the admin token, which every server process
    of the stack shares (so any of them checks what another handed out).

    NOTE: a new admin token voids the resume tokens handed out before it.
    """
    digest = hmac.new(admin_token.encode("utf-8"), _RESUME + request_id.encode("utf-8"),
                      hashlib.sha256)
    return digest.hexdigest()


def resume_matches(token: str, admin_token: str, request_id: str) -> bool:
    """Tell, in constant time, whether ``token`` is ``request_id``'s resume token."""
    return hmac.compare_digest(token.encode("utf-8", "replace"),
                               resume_token(admin_token, request_id).encode())
