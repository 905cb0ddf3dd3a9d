"""The Redis password: the one in ``redis_url``, or the embedded Redis's own.

An external Redis's password is the one ``redis_url`` carries (``redis://:pw@host:port/db``),
or else the contents of ``redis_password_file`` when that is set (a Docker secret, say:
it must exist, nothing generates it). A ``rediss://`` URL (TLS) is always an external Redis.
The embedded Redis (programs/redis_server.py) requires a password generated at first
start into ``redis_password_file`` (default ``<data_dir>/redis.password``, mode 0600), like
the admin token; every program that talks to it reads that file (``wiring.redis_client``),
and whichever program starts first generates it. APPSEC: never print a Redis URL as given;
:func:`redact` it.
"""

from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from agentainer import secretfile
from agentainer.errors import InvalidConfig

if TYPE_CHECKING:  # NOTE: config.py redacts URLs with this module; no import cycle
    from agentainer.config import Config

WHAT = "Redis password"
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def is_embedded(settings: "Config") -> bool:
    """Return whether the settings ask for the embedded Redis (on, and on loopback).

    NOTE: a ``rediss://`` URL is an external Redis wherever it is: the embedded one has no TLS.
    """
    url = urlsplit(settings.redis_url)
    return (settings.embedded_redis and url.scheme != "rediss"
            and (url.hostname or "127.0.0.1") in LOOPBACK)


def for_settings(settings: "Config") -> str | None:
    """Return the password a client must send that ``redis_url`` does not carry.

    The embedded Redis's, read (or generated) from ``redis_password_path``, unless
    ``redis_url`` names a password itself; for an external Redis, the contents of
    ``redis_password_file`` (which must exist), or None when that is not set.

    Raises:
        InvalidConfig: the password file cannot be read or written, or is unusable.
    """
    if urlsplit(settings.redis_url).password:
        return None
    if not is_embedded(settings):
        return _external(settings)
    return load_or_create(settings)


def _external(settings: "Config") -> str | None:
    """Return an external Redis's password from ``redis_password_file``, if that is set.

    NOTE: any length: the external Redis's operator chose it, as for one in the URL.

    Raises:
        InvalidConfig: the file is missing, unreadable or empty.
    """
    if settings.redis_password_file is None:
        return None
    return secretfile.read_named(settings.redis_password_file, setting="redis_password_file",
                                 what=WHAT)


def for_embedded(settings: "Config") -> str:
    """Return the password the embedded Redis requires: ``redis_url``'s, else the file's.

    Raises:
        InvalidConfig: the password file cannot be read or written, or is unusable.
    """
    # NOTE: an empty one (redis://:@host) would be no password at all: the file's is used
    named = urlsplit(settings.redis_url).password
    return unquote(named) if named else load_or_create(settings)


def load_or_create(settings: "Config") -> str:
    """Return the embedded Redis's password, generating its file (0600) at first start.

    Raises:
        InvalidConfig: the password file cannot be read or written, or is unusable.
    """
    return secretfile.load_or_create(settings.redis_password_path, what=WHAT)


def redact(url: str) -> str:
    """Return ``url`` with its user information's password replaced by ``***`` (for messages).

    NOTE: string surgery, not a URL parser, so that a malformed value is redacted too.
    """
    userinfo, at, host = url.rpartition("@")
    if not at:
        return url
    scheme, sep, userinfo = userinfo.rpartition("://")
    user, colon, _ = userinfo.partition(":")
    return f"{scheme}{sep}{user + ':' if colon else ''}***@{host}"
