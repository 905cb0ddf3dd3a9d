"""The admin token: configured, or generated once into the data directory."""

import hmac
import os
import secrets
from pathlib import Path

from agentainer.errors import InvalidConfig
from agentainer.models import hash_token


def load_or_create(configured: str, path: Path) -> str:
    """Return the admin token, creating ``path`` (mode 0600) when none is configured.

    Raises:
        InvalidConfig: the token file cannot be read or written.
    """
    if configured:
        return configured
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        pass
    except OSError as ex:
        raise InvalidConfig(f"cannot read the admin token file {path}: {ex.strerror}") from ex
    token = secrets.token_urlsafe(32)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text(encoding="utf-8").strip()  # NOTE: another process won the race
    except OSError as ex:
        raise InvalidConfig(f"cannot write the admin token file {path}: {ex.strerror}") from ex
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(token + "\n")
    return token


def read(path: Path) -> str | None:
    """Return the token stored at ``path``, or None when there is none to read."""
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def matches(token: str, expected_hash: str) -> bool:
    """Compare a presented token with a stored hash in constant time."""
    return hmac.compare_digest(hash_token(token), expected_hash)
