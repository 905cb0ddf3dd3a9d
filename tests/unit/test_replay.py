"""Replay backoff: doubling from the base, capped, with jitter in [50 %, 100 %]."""

import pytest

from agentainer.replay import backoff


@pytest.mark.parametrize("attempt, expected", [(1, 1.0), (2, 2.0), (3, 4.0), (7, 60.0),
                                               (30, 60.0)])
def test_backoff_doubles_up_to_the_cap(attempt, expected):
    assert backoff(attempt, base=1, cap=60, rand=lambda: 1.0) == expected
    assert backoff(attempt, base=1, cap=60, rand=lambda: 0.0) == expected / 2
