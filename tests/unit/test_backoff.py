"""Backoff: doubling from the base, capped, jittered to 50-100 %."""

import pytest

from agentainer.backoff import backoff


@pytest.mark.parametrize("attempt, expected", [(1, 1.0), (2, 2.0), (3, 4.0), (7, 60.0),
                                               (30, 60.0)])
def test_backoff_doubles_up_to_the_cap(attempt, expected):
    assert backoff(attempt, base=1, cap=60, rand=lambda: 1.0) == expected
    assert backoff(attempt, base=1, cap=60, rand=lambda: 0.0) == expected / 2


def test_backoff_scales_with_the_base():
    assert backoff(1, base=0.5, cap=60, rand=lambda: 1.0) == 0.5
    assert backoff(4, base=0.5, cap=3, rand=lambda: 1.0) == 3


def test_backoff_jitter_stays_within_half_and_all_of_the_delay():
    for _ in range(200):
        assert 2.0 <= backoff(2, base=2, cap=60) <= 4.0
