#!/usr/bin/python3
"""The Swarm stack's healthcheck of an ``agentainer-server`` task: exit 0 while its API
answers, 1 when it does not.

The API listens on the task's ``docker_gwbridge`` address (``listen_network``), not on
loopback; the gateways listen on the same port on the agent networks, and log every
caller that is not an agent, so they are not asked. The ``docker_gwbridge`` interface is
the one that carries the task's default route (the overlays' egress). The API answers
``GET /health`` with 200, or 503 while Redis or Docker is down (``degraded``: a new task
would not mend that, so it still counts as alive). Standard library only.
"""

import fcntl
import os
import socket
import struct
import sys
import urllib.error
import urllib.request

ALIVE = (200, 503)
TIMEOUT = 10.0
SIOCGIFADDR = 0x8915


def default_interface() -> str:
    """Return the interface of this network namespace's default route."""
    with open("/proc/net/route", encoding="ascii") as table:
        for line in table.readlines()[1:]:
            interface, destination = line.split()[:2]
            if destination == "00000000":
                return interface
    raise OSError("no default route")


def address_of(interface: str) -> str:
    """Return the interface's IPv4 address."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        request = struct.pack("256s", interface.encode()[:15])
        return socket.inet_ntoa(fcntl.ioctl(probe.fileno(), SIOCGIFADDR, request)[20:24])


def main() -> int:
    port = int(os.environ.get("AGENTAINER_PORT") or 8081)
    try:
        url = f"http://{address_of(default_interface())}:{port}/health"
        with urllib.request.urlopen(url, timeout=TIMEOUT) as reply:
            status = reply.status
    except urllib.error.HTTPError as ex:
        status = ex.code
    except OSError as ex:
        print(f"agentainer-healthcheck: {ex}", file=sys.stderr)
        return 1
    return 0 if status in ALIVE else 1


if __name__ == "__main__":
    sys.exit(main())
