"""The restart policy on its own, on a clock the test moves."""

from __future__ import annotations

import pytest

from shmcam.restarts import DELAYS, RestartPolicy


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def policy(clock, **kwargs):
    return RestartPolicy(clock=clock, uniform=lambda: 0.5, **kwargs)  # no jitter


def test_delays_grow_while_it_keeps_failing_at_once_and_are_capped():
    clock = Clock()
    p = policy(clock)
    seen = []
    for _ in range(len(DELAYS) + 3):
        p.started()
        clock.now += 0.1  # fails right after its start
        seen.append(p.next_delay())
        clock.now += seen[-1]
    assert seen == [*DELAYS, DELAYS[-1], DELAYS[-1], DELAYS[-1]]


def test_a_healthy_run_resets_however_often_it_failed_before():
    """The bug this replaces: after four restarts over a node's life, every restart waited 30 s."""
    clock = Clock()
    p = policy(clock, healthy_after=10.0)
    for _ in range(5):
        p.started()
        clock.now += 0.1
        clock.now += p.next_delay()
    assert p.failures == 5
    p.started()
    clock.now += 11.0  # ran fine for longer than healthy_after
    assert p.next_delay() == DELAYS[0]
    assert p.failures == 1


def test_failures_older_than_the_window_are_forgotten():
    clock = Clock()
    p = policy(clock, window=60.0, healthy_after=1e9)
    for _ in range(3):
        p.next_delay()
        clock.now += 1
    assert p.failures == 3
    clock.now += 61
    assert p.failures == 0
    assert p.next_delay() == DELAYS[0]


def test_jitter_spreads_delays_within_its_bounds():
    clock = Clock()
    values = iter([0.0, 1.0])
    p = RestartPolicy(clock=clock, jitter=0.2, uniform=lambda: next(values))
    assert p.next_delay() == pytest.approx(DELAYS[0] * 0.8)
    p.reset()
    assert p.next_delay() == pytest.approx(DELAYS[0] * 1.2)


def test_reset_makes_the_next_delay_the_first():
    clock = Clock()
    p = policy(clock)
    p.next_delay()
    p.next_delay()
    p.reset()
    assert p.next_delay() == DELAYS[0]


@pytest.mark.parametrize("kwargs", [{"delays": ()}, {"delays": (-1.0,)}, {"jitter": 1.0}])
def test_nonsense_is_refused(kwargs):
    with pytest.raises(ValueError):
        RestartPolicy(**kwargs)
