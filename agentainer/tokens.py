"""The admin token: configured, or generated once into the data directory."""

import hmac
import os
import secrets
import tempfile
from pathlib import Path

from agentainer.errors import InvalidConfig
from agentainer.models import hash_token

MIN_LENGTH = 16


def load_or_create(configured: str, path: Path) -> str:
    """Return the admin token, creating ``path`` (mode 0600) when none is configured.

    Several processes may start at once (supervisord starts every server process
    together); exactly one token wins and every process returns it.

    Raises:
        InvalidConfig: the token file cannot be read or written, or holds no usable token.
    """
    if configured:
        return configured
    try:
        return _read_existing(path)
    except FileNotFoundError:
        pass
    token = secrets.token_urlsafe(32)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # NOTE: written whole under a temporary name, then linked into place, so the
        # token file never exists half-written; link (unlike rename) fails if another
        # process linked first, and that process's token is the one everyone uses.
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:  # mkstemp: mode 0600
                handle.write(token + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.link(temporary, path)
        finally:
            os.unlink(temporary)
    except FileExistsError:
        return _read_existing(path)
    except OSError as ex:
        raise InvalidConfig(f"cannot write the admin token file {path}: {ex.strerror}") from ex
    return token


def _read_existing(path: Path) -> str:
    """Return the token stored at ``path``.

    Raises:
        FileNotFoundError: there is no token file.
        InvalidConfig: it cannot be read, or is empty or too short to be a token.
    """
    try:
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise
    except OSError as ex:
        raise InvalidConfig(f"cannot read the admin token file {path}: {ex.strerror}") from ex
    if len(token) < MIN_LENGTH:
        held = f"a token of {len(token)} characters" if token else "no token"
        raise InvalidConfig(f"the admin token file {path} holds {held} (at least {MIN_LENGTH} "
                            "are needed); delete it to have a new token generated at the next "
                            "start, or write a longer one into it")
    return token


def read(path: Path) -> str | None:
    """Return the token stored at ``path``, or None when there is no token file.

    Raises:
        InvalidConfig: the file cannot be read, or holds no usable token.
    """
    try:
        return _read_existing(path)
    except FileNotFoundError:
        return None


def matches(token: str, expected_hash: str) -> bool:
    """Compare a presented token with a stored hash in constant time."""
    return hmac.compare_digest(hash_token(token), expected_hash)
