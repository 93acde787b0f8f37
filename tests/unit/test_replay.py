"""The trace replayer (loadtest/replay.py), its traces (loadtest/traces.py) and the learner of
TTLs (loadtest/reuse.py): exact outcomes on hand-made traces, and the generated shapes having
the structure they claim."""

from __future__ import annotations

import collections
import itertools
import json
from dataclasses import replace
from pathlib import Path

import pytest

from app.cache.memory import ENTRY_OVERHEAD
from loadtest.replay import POLICIES, after_restart, call_cost, main, replay
from loadtest.reuse import MIN_STORES, ReuseLearner
from loadtest.traces import SHAPES, Request, Shape, generate, read, write

BIG = 10**12


def _r(t: float, key: str, answer: int = 1000, endpoint: str = "optimize", mode: str = "code") -> Request:
    return Request(t, endpoint, mode, key, 100, answer)


@pytest.mark.parametrize("policy", POLICIES)
def test_a_repeat_within_the_ttl_hits_and_after_it_calls_again(policy: str) -> None:
    trace = [_r(0, "a"), _r(10, "a"), _r(3599, "a"), _r(3601, "a"), _r(3700, "a")]
    out = replay(trace, policy, BIG, 100, ttl=3600)
    assert (out.requests, out.hits, out.calls) == (5, 3, 2)
    assert out.cost == pytest.approx(2 * call_cost(trace[0]))
    assert out.byte_hit_ratio == pytest.approx(3 / 5)


def test_bytes_held_are_weighted_by_time() -> None:
    """One answer held 100 s of a 200 s trace, another its last 100 s: on average one."""
    trace = [_r(0, "a"), _r(100, "b", answer=3000), _r(200, "c")]
    out = replay(trace, "lru", BIG, 100, ttl=100)
    assert out.seconds == 200
    assert out.mean_bytes == pytest.approx(((1000 + ENTRY_OVERHEAD) * 100 + (3000 + ENTRY_OVERHEAD) * 100) / 200)
    assert out.mean_entries == pytest.approx(1.0)


def test_the_entry_bound_evicts_the_least_recently_used_first() -> None:
    trace = [_r(0, "a"), _r(1, "b"), _r(2, "a"), _r(3, "c"), _r(4, "a"), _r(5, "b")]
    out = replay(trace, "lru", BIG, 2, ttl=3600)
    assert out.hits == 2  # a at 2 and 4; b was evicted by c (a was used more recently)


def test_s3fifo_keeps_what_is_reused_over_a_scan_of_one_offs() -> None:
    """A hot key asked between long runs of one-offs: LRU lets the one-offs push it out, S3-FIFO
    keeps it (asked again while in the small queue: promoted to main, which one-offs never enter)."""
    trace, t = [], 0.0
    for round_ in range(20):
        trace.append(_r(t, "hot"))
        t += 1
        trace.append(_r(t, "hot"))
        t += 1
        for i in range(30):
            trace.append(_r(t, f"once-{round_}-{i}"))
            t += 1
    lru = replay(trace, "lru", BIG, 20, ttl=3600)
    s3 = replay(trace, "s3fifo", BIG, 20, ttl=3600)
    assert lru.hits == 20  # only each round's immediate repeat
    assert s3.hits > 30


def test_the_byte_bound_holds_at_every_step() -> None:
    trace = [_r(i, f"k{i}", answer=10_000) for i in range(50)]
    bound = 5 * (10_000 + ENTRY_OVERHEAD)
    for policy in POLICIES:
        out = replay(trace, policy, bound, 1000, ttl=3600)
        assert out.mean_bytes <= bound


def test_the_learner_gives_rare_classes_the_floor_and_keeps_the_ceiling_without_evidence() -> None:
    learner = ReuseLearner(floor=60)
    assert learner.probation("optimize:video", 3600) == 3600  # nothing seen yet
    for i in range(MIN_STORES * 2):
        learner.stored(f"v{i}", "optimize:video", i)  # never asked again
    assert learner.probation("optimize:video", 3600) == 60
    assert learner.probation("optimize:video", 30) == 30  # never above the ceiling


def test_the_learner_sees_reuses_after_an_answer_has_left() -> None:
    """A reuse 2 h after its store counts though the answer (1 h) is gone: probation is learned
    from when reuses come, not cut to what the current TTL lets it see."""
    learner = ReuseLearner(floor=60, coverage=0.9)
    for i in range(MIN_STORES * 2):
        learner.stored(f"k{i}", "questions", i)
        learner.asked(f"k{i}", i + 7200)
    assert learner.probation("questions", 86_400) >= 7200
    assert learner.probation("questions", 3600) == 3600


def test_the_learner_covers_the_quick_first_reuses_and_lets_the_rest_go() -> None:
    learner = ReuseLearner(floor=60, coverage=0.9)
    for i in range(100):
        learner.stored(f"k{i}", "code", 0)
        learner.asked(f"k{i}", 100 if i < 95 else 20_000)
        learner.asked(f"k{i}", 30_000)  # later asks of the same store are not first reuses
    assert learner.probation("code", 3600) == 120  # the bucket that holds 100 s


def test_the_learner_forgets_with_its_half_life() -> None:
    learner = ReuseLearner(half_life=3600)
    for i in range(40):
        learner.stored(f"k{i}", "code", 0)
    learner.stored("late", "code", 4 * 3600)
    assert learner.classes["code"].stores == pytest.approx(40 / 16 + 1, rel=0.01)


def test_generated_traces_are_the_same_every_time_and_in_time_order() -> None:
    shape = Shape(seed=7, hours=1, rate=5)
    first, second = list(generate(shape)), list(generate(shape))
    assert first == second and len(first) > 1000
    assert all(a.t <= b.t for a, b in itertools.pairwise(first))


def test_a_generated_day_has_the_structure_real_traffic_has() -> None:
    trace = list(generate(replace(SHAPES["team-day"], rate=1.0)))  # the shape at a third of its rate
    by_hour = collections.Counter(int(r.t // 3600) for r in trace)
    assert by_hour[12] > 2.5 * by_hour[0]  # the daily cycle: noon against midnight
    counts = collections.Counter(r.key for r in trace)
    once = sum(1 for r in trace if counts[r.key] == 1) / len(trace)
    assert 0.25 < once < 0.45  # a third one-offs (and a few catalog prompts asked once)
    top = sum(n for _, n in counts.most_common(len(counts) // 100))
    assert top > 0.15 * len(trace)  # skew: 1 % of the prompts, a sixth of the requests
    video = [r.answer for r in trace if r.mode == "video"]
    other = [r.answer for r in trace if r.mode != "video"]
    assert sorted(video)[len(video) // 2] > 3 * sorted(other)[len(other) // 2]  # long video answers


def test_popularity_drifts_in_the_drifting_shape() -> None:
    trace = list(generate(replace(SHAPES["drifting"], rate=1.0)))
    first = collections.Counter(r.key for r in trace if r.t < 3600).most_common(50)
    last = collections.Counter(r.key for r in trace if r.t > 23 * 3600).most_common(50)
    assert len({k for k, _ in first} & {k for k, _ in last}) < 25


def test_a_trace_file_round_trips_and_a_bad_line_is_named(tmp_path: Path) -> None:
    trace = list(generate(Shape(seed=3, hours=0.2)))
    path = tmp_path / "trace.jsonl"
    assert write(trace, path) == len(trace)
    assert list(read(path)) == trace
    path.write_text(path.read_text() + json.dumps({"t": 1, "endpoint": "optimize"}) + "\n")
    with pytest.raises(ValueError, match=rf"trace.jsonl:{len(trace) + 1}: not a trace line"):
        list(read(path))


def test_the_command_prints_every_policy_side_by_side(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "small.jsonl"
    write(generate(Shape(seed=5, hours=0.5)), path)
    assert main(["--trace", str(path), "--max-entries", "200"]) == 0
    printed = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in printed if line.startswith("small.jsonl")]
    assert [row[1] for row in rows] == list(POLICIES)
    assert all(0 <= float(row[2]) <= 1 for row in rows)


def test_predicted_warming_picks_what_is_asked_not_what_was_stored_last() -> None:
    """Before the restart: one answer asked again and again, then five asked once. With room to
    warm one, the most recently stored is a one-off; the predicted one is the one asked next."""
    before = [_r(float(t), "hot") for t in range(0, 600, 30)]
    before += [_r(600.0 + i, f"once-{i}") for i in range(5)]
    after = [_r(700.0 + i, "hot") for i in range(10)]
    trace = before + after
    assert after_restart(trace, 650.0, "recent", warm=1, first=10) == 9  # the first ask is a miss
    assert after_restart(trace, 650.0, "predicted", warm=1, first=10) == 10
    assert after_restart(trace, 650.0, "predicted", warm=0, first=10) == 9


def test_warming_only_takes_answers_still_fresh_at_the_restart() -> None:
    trace = [_r(0.0, "old"), _r(10.0, "old"), _r(5000.0, "old")]
    assert after_restart(trace, 4000.0, "predicted", warm=10, first=1, ttl=3600) == 0
