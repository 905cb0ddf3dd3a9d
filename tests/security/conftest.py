"""The integration fixtures (the real server, REST session and CLI) for security tests."""

from tests.integration.conftest import *  # noqa: F401,F403
