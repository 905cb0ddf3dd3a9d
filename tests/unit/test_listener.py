"""A request that arrives too slowly is cut off: headers by a deadline, a body by a rate."""

import pytest

from agentainer.api.serving import Deadlines

DEADLINES = Deadlines(header_timeout=10.0, body_min_rate=1000)


@pytest.mark.parametrize("elapsed, expired", [(9.9, False), (10.1, True)])
def test_headers_get_header_timeout(elapsed, expired):
    assert DEADLINES.expired(elapsed, headers_done=False, body_bytes=0) is expired


@pytest.mark.parametrize("elapsed, body_bytes, expired", [
    (19.9, 0, False),          # the body gets header_timeout of grace after the headers'
    (20.1, 0, True),
    (29.9, 10_000, False),     # and a second more per body_min_rate bytes received
    (30.1, 10_000, True),
])
def test_a_body_must_keep_up_body_min_rate(elapsed, body_bytes, expired):
    assert DEADLINES.expired(elapsed, headers_done=True, body_bytes=body_bytes) is expired
