"""The CLI's exit status for an error reply: by HTTP status, and by code where it differs."""

import pytest

from agentainer.cli.client import ApiError
from agentainer.exit_codes import ExitStatus


@pytest.mark.parametrize("status, code, expected", [
    (None, "unreachable", ExitStatus.UNAVAILABLE),
    (400, "invalid_input", ExitStatus.ERROR),
    (401, "unauthorized", ExitStatus.AUTH),
    (403, "forbidden", ExitStatus.AUTH),
    (403, "volume_refused", ExitStatus.ERROR),  # the mount policy's, not the token's
    (404, "agent_not_found", ExitStatus.NOT_FOUND),
    (409, "volume_conflict", ExitStatus.CONFLICT),
    (503, "agent_overloaded", ExitStatus.UNAVAILABLE),
    (507, "journal_full", ExitStatus.ERROR),
])
def test_exit_status_of_an_error_reply(status, code, expected):
    assert ApiError("m", status=status, code=code).exit_status is expected
