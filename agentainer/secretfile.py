"""Secret files in the data directory: generated once (mode 0600), then read by everyone.

The admin token (``tokens.py``) and the embedded Redis's password (``redis_password.py``)
are both such files. A file a setting names for an external Redis's stack (a Docker secret,
say) is only read (:func:`read_named`): each host generating its own would split the stack.
"""

import os
import secrets
import tempfile
from pathlib import Path

from agentainer.errors import InvalidConfig

MIN_LENGTH = 16


def load_or_create(path: Path, *, what: str) -> str:
    """Return the secret stored at ``path``, generating it (mode 0600) when there is none.

    Several processes may start at once (supervisord starts every program together);
    exactly one secret wins and every process returns it.

    Args:
        what: the secret, as messages name it (``admin token``).

    Raises:
        InvalidConfig: the file cannot be read or written, or holds no usable secret.
    """
    try:
        return read_existing(path, what=what)
    except FileNotFoundError:
        pass
    secret = secrets.token_urlsafe(32)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # NOTE: written whole under a temporary name, then linked into place, so the
        # file never exists half-written; link (unlike rename) fails if another
        # process linked first, and that process's secret is the one everyone uses.
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:  # mkstemp: mode 0600
                handle.write(secret + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.link(temporary, path)
        finally:
            os.unlink(temporary)
    except FileExistsError:
        return read_existing(path, what=what)
    except OSError as ex:
        raise InvalidConfig(f"cannot write the {what} file {path}: {ex.strerror}") from ex
    return secret


def read_existing(path: Path, *, what: str) -> str:
    """Return the secret stored at ``path``.

    Raises:
        FileNotFoundError: there is no such file.
        InvalidConfig: it cannot be read, or is empty or too short to be a secret.
    """
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise
    except OSError as ex:
        raise InvalidConfig(f"cannot read the {what} file {path}: {ex.strerror}") from ex
    if len(secret) < MIN_LENGTH:
        noun = what.split()[-1]
        held = f"a {noun} of {len(secret)} characters" if secret else f"no {noun}"
        raise InvalidConfig(f"the {what} file {path} holds {held} (at least {MIN_LENGTH} "
                            f"are needed); delete it to have a new {noun} generated at the "
                            "next start, or write a longer one into it")
    return secret


def read_named(path: Path, *, setting: str, what: str, minimum: int = 1) -> str:
    """Return the secret in the file ``setting`` names, which nothing generates.

    Args:
        setting: the setting that names ``path``, as messages name it (``token_file``).
        what: the secret, as messages name it (``admin token``).
        minimum: the fewest characters a usable secret has.

    Raises:
        InvalidConfig: naming ``setting``: the file is missing or unreadable, or holds
            fewer than ``minimum`` characters (APPSEC: never what it holds).
    """
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except OSError as ex:
        raise InvalidConfig(f"{setting} = {path}: cannot read the {what} file: "
                            f"{ex.strerror}") from None
    if len(secret) < minimum:
        held = f"{len(secret)} characters" if secret else "nothing"
        raise InvalidConfig(f"{setting} = {path}: the {what} file holds {held} (at least "
                            f"{minimum} are needed)")
    return secret
