"""The attacks run against the real stack of ``tests/integration`` (server, workers, Docker).

NOTE: pytest applies a conftest's fixtures only to tests below its directory, so the
integration fixtures are imported here by name; this directory gets a stack of its own.
"""

from tests.integration.conftest import api, name, stack  # noqa: F401 - fixtures, by name
