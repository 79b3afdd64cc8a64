"""Both memory planners on their own: live buffers never share bytes, and the greedy arena lies
between the live-bytes peak and the naive sum."""

from itertools import combinations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgekit.runtime.planner import ALIGNMENT, Buffer, GreedyPlanner, NaivePlanner

BUFFERS = st.lists(st.tuples(st.integers(0, 3000), st.integers(0, 12), st.integers(0, 6)),
                   max_size=30).map(
    lambda items: [Buffer(f"t{i}", n, first, first + span)
                   for i, (n, first, span) in enumerate(items)])


@pytest.mark.parametrize("planner", [NaivePlanner(), GreedyPlanner()], ids=repr)
@settings(max_examples=150, deadline=None)
@given(buffers=BUFFERS)
def test_live_buffers_never_share_bytes(planner, buffers):
    plan = planner.plan(buffers)
    assert len(plan.offsets) == len(buffers) and plan.size % ALIGNMENT == 0
    for offset, buf in zip(plan.offsets, buffers, strict=True):
        assert offset % ALIGNMENT == 0 and offset + buf.nbytes <= plan.size
    for (oa, a), (ob, b) in combinations(zip(plan.offsets, buffers, strict=True), 2):
        if a.overlaps(b):
            assert oa + a.nbytes <= ob or ob + b.nbytes <= oa, (a, oa, b, ob)


@settings(max_examples=150, deadline=None)
@given(buffers=BUFFERS)
def test_greedy_between_live_peak_and_naive(buffers):
    steps = {s for b in buffers for s in range(b.first_use, b.last_use + 1)}
    live_peak = max((sum(b.nbytes for b in buffers if b.first_use <= s <= b.last_use)
                     for s in steps), default=0)
    assert live_peak <= GreedyPlanner().plan(buffers).size <= NaivePlanner().plan(buffers).size


def test_greedy_reuses_memory_along_a_chain():
    chain = [Buffer(f"t{i}", 100, i, i + 1) for i in range(4)]
    assert GreedyPlanner().plan(chain).offsets == (0, 112, 0, 112)
    assert GreedyPlanner().plan(chain).size == 224
    assert NaivePlanner().plan(chain).size == 4 * 112


def test_greedy_fills_the_first_gap_that_fits():
    """The small buffer outlives neither neighbour's lifetime but fits where ``short`` was."""
    buffers = [Buffer("long", 64, 0, 5), Buffer("short", 64, 0, 1), Buffer("long2", 64, 0, 5),
               Buffer("small", 48, 3, 4)]
    assert GreedyPlanner().plan(buffers).offsets == (0, 64, 128, 64)


def test_empty():
    assert GreedyPlanner().plan([]).size == NaivePlanner().plan([]).size == 0
