"""Which ``Host`` names the server answers for, and which of them are agents' origins.

APPSEC: DNS rebinding. A page on ``evil.example`` whose name is made to resolve to
127.0.0.1 reaches this server as its own origin, so the browser lets it read the answers;
only the ``Host`` header, which is the page's name, tells it apart. So a request is
served only for a name that cannot be an attacker's: an IP address (a browser sends one
only when the page's own origin is that address), ``localhost``, the configured listen
host, the ``allowed_hosts`` setting, or ``<agent>.localhost`` — each agent's own origin,
where every path goes to that agent and nothing else (not the management API, not
another agent), so one agent's cookies and scripts are not another's.
"""

import ipaddress
from dataclasses import dataclass

from agentainer.agents.spec import ID_RE, NAME_RE
from agentainer.errors import HostNotAllowed

LOCALHOST = "localhost"
AGENT_ORIGIN_SUFFIX = ".localhost"
ANY_HOST = "*"


def host_name(host: str) -> str:
    """Return the name in a ``Host`` value: lowercased, without its port, brackets or
    trailing dot (``[::1]:8081`` -> ``::1``, ``LocalHost.:80`` -> ``localhost``).

    NOTE: the port is not checked: a rebinding page's name differs whatever the port,
    and a forwarded port (``ssh -L 9000:127.0.0.1:8081``) must keep working.
    """
    text = host.strip().lower()
    if text.startswith("["):
        return text[1:].partition("]")[0]
    name, colon, port = text.rpartition(":")
    if colon and port.isdigit() and ":" not in name:
        text = name
    elif colon and not port:
        text = name  # NOTE: "localhost:" is "localhost"
    return text.rstrip(".")


def parse_allowed_hosts(value: str) -> tuple[str, ...]:
    """Convert the ``allowed_hosts`` setting: names (or ``*``, any), comma separated.

    Raises:
        ValueError: an entry is not a host name.
    """
    names = []
    for part in str(value).split(","):
        if not part.strip():
            continue
        name = ANY_HOST if part.strip() == ANY_HOST else host_name(part)
        if name != ANY_HOST and (not name or any(c in name for c in "/@ \t?#")):
            raise ValueError(f"{part.strip()!r} is not a host name")
        names.append(name)
    return tuple(dict.fromkeys(names))


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class HostPolicy:
    """Tells the management API's hosts from agents' origins and from refused names."""

    names: frozenset[str]   # besides IP addresses and localhost
    any_host: bool = False

    @classmethod
    def from_settings(cls, listen_host: str, allowed_hosts: tuple[str, ...]) -> "HostPolicy":
        names = {host_name(listen_host), *allowed_hosts} - {ANY_HOST, ""}
        return cls(frozenset(names), any_host=ANY_HOST in allowed_hosts)

    def agent_origin(self, host: str | None) -> str | None:
        """Return the agent a ``Host`` names as its origin, or None for this server itself.

        A request without ``Host`` is served: browsers always send one.

        Raises:
            HostNotAllowed: the name is none of the above.
        """
        if not host:
            return None
        name = host_name(host)
        if name.endswith(AGENT_ORIGIN_SUFFIX):
            ref = name[:-len(AGENT_ORIGIN_SUFFIX)]
            if NAME_RE.match(ref) or ID_RE.match(ref):
                return ref
            raise HostNotAllowed(host)
        if name == LOCALHOST or name in self.names or self.any_host or _is_address(name):
            return None
        raise HostNotAllowed(host)
