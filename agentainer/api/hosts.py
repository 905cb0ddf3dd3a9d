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

from agentainer.errors import HostNotAllowed
from agentainer.names import ANY_HOST, ID_RE, NAME_RE, host_name

LOCALHOST = "localhost"
AGENT_ORIGIN_SUFFIX = ".localhost"


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
