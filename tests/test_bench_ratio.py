"""The benchmark's enqueue ratio and the interval it prints beside it, from the rounds it ran."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

from bench.enqueue import SINGLE, Round, combined_ratio, ratio_interval
from bench.load import LoadResult, Tally


def turn(bare_seconds: float, ours_seconds: float, requests: int = 200) -> Round:
    """Return a round in which each side answered `requests` requests in the time given."""
    return Round(
        LoadResult(SINGLE, requests, Tally(ok=requests), bare_seconds),
        LoadResult(SINGLE, requests, Tally(ok=requests), ours_seconds),
    )


def test_the_ratio_adds_the_rounds_up_before_dividing() -> None:
    # 400 requests in 0.5 s against 400 in 0.25 s: twice as fast, whatever each round's own ratio.
    rounds = [turn(0.1, 0.2), turn(0.4, 0.05)]

    assert combined_ratio(rounds) == pytest.approx(2.0)


def test_rounds_that_agree_give_an_interval_of_one_point() -> None:
    rounds = [turn(0.2, 0.1)] * 10

    assert ratio_interval(rounds) == pytest.approx((2.0, 2.0))


def test_noisy_rounds_give_an_interval_around_the_run_s_ratio() -> None:
    rounds = [turn(0.2, ours) for ours in (0.15, 0.25, 0.18, 0.30, 0.16, 0.21, 0.24, 0.17, 0.19, 0.28)]

    low, high = ratio_interval(rounds)

    assert low < combined_ratio(rounds) < high
    assert high - low > 0.05
    assert ratio_interval(rounds) == (low, high)  # the same rounds, the same interval


def test_a_wider_level_gives_a_wider_interval() -> None:
    rounds = [turn(0.2, ours) for ours in (0.15, 0.25, 0.18, 0.30, 0.16, 0.21, 0.24, 0.17, 0.19, 0.28)]

    narrow, wide = ratio_interval(rounds, level=0.5), ratio_interval(rounds, level=0.95)

    assert wide[0] < narrow[0] < narrow[1] < wide[1]
