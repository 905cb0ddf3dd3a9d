"""Which host paths an agent may bind-mount (APPSEC: the server owns the Docker socket)."""

import os
from collections.abc import Iterable
from pathlib import Path

from agentainer.errors import InvalidInput

# NOTE: these trees and everything below them; "/" itself is refused separately.
ALWAYS_REFUSED = (
    Path("/etc"), Path("/proc"), Path("/sys"), Path("/dev"), Path("/boot"),
    Path("/run"), Path("/var/run"), Path("/var/lib/docker"),
)
DOCKER_SOCKETS = (Path("/var/run/docker.sock"), Path("/run/docker.sock"))


class MountPolicy:
    """Decides whether a bind mount's host path is allowed, after resolving symlinks."""

    def __init__(self, roots: Iterable[Path], data_dir: Path) -> None:
        self._roots = tuple(Path(os.path.realpath(root)) for root in roots)
        self._refused = tuple(Path(os.path.realpath(p)) for p in ALWAYS_REFUSED)
        self._sockets = tuple(Path(os.path.realpath(p)) for p in DOCKER_SOCKETS)
        self._data_dir = Path(os.path.realpath(data_dir))

    def check(self, host_path: str) -> Path:
        """Return the resolved host path, or refuse it.

        Raises:
            InvalidInput: the path is one Agentainer never mounts, or lies outside the
                configured ``volume_roots``.
        """
        path = Path(os.path.realpath(host_path))
        refused = path == Path("/") or any(p == path or p in path.parents for p in self._refused)
        if refused or path in self._sockets or path.suffix == ".sock":
            raise InvalidInput(f"host path {host_path!r} may not be mounted into an agent",
                               code="volume_refused")
        if path == self._data_dir or self._data_dir in path.parents:
            raise InvalidInput(f"host path {host_path!r} is inside Agentainer's data directory",
                               code="volume_refused")
        if not any(path == root or root in path.parents for root in self._roots):
            roots = ", ".join(str(root) for root in self._roots) or "(none)"
            raise InvalidInput(f"host path {host_path!r} is outside the allowed volume roots "
                               f"({roots}); set volume_roots to allow it",
                               code="volume_refused")
        return path
