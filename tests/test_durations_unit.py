"""Job durations in bounded memory (durations.py), without processes: buckets, quantiles,
merging in any grouping, the slowest jobs, a worker's deltas, and the stored form."""

from __future__ import annotations

import json
import math

from hypothesis import given
from hypothesis import strategies as st

from taskrunner.durations import (
    BUCKETS,
    LARGEST,
    SLOWEST_KEPT,
    SMALLEST,
    Durations,
    WorkerDurations,
    bucket_bounds,
    bucket_of,
    bucket_value,
    format_seconds,
    from_wire,
)

seconds = st.floats(min_value=0.0, max_value=2 * LARGEST, allow_nan=False)
# A job: its duration and a key (a seq); keys repeat, as a retried job's seq does.
timed_jobs = st.lists(st.tuples(seconds, st.integers(0, 30)), max_size=40)


def durations_of(jobs: list[tuple[float, int]]) -> Durations:
    durations = Durations()
    for duration, seq in jobs:
        durations.add(duration, seq, f"job-{seq}")
    return durations


def merged(*parts: Durations) -> Durations:
    result = Durations()
    for part in parts:
        result.merge(part)
    return result


def same(a: Durations, b: Durations) -> bool:
    return (
        a.counts == b.counts
        and a.count == b.count
        and math.isclose(a.total, b.total, rel_tol=1e-9, abs_tol=1e-9)
        and a.longest == b.longest
        and a.slowest == b.slowest
    )


def test_the_histogram_is_a_few_hundred_buckets_from_a_microsecond_to_a_day() -> None:
    assert 250 < BUCKETS < 320
    assert bucket_of(0.0) == 0
    assert bucket_of(SMALLEST / 2) == 0
    assert bucket_of(SMALLEST) == 1
    assert bucket_of(LARGEST * 10) == BUCKETS - 1
    assert bucket_of(1e300) == BUCKETS - 1


@given(st.floats(min_value=SMALLEST, max_value=LARGEST * 0.99))
def test_a_duration_lands_in_the_bucket_that_holds_it(duration: float) -> None:
    low, high = bucket_bounds(bucket_of(duration))
    # Within a rounding of the bounds: log2 of a value on a boundary may fall either side.
    assert low * (1 - 1e-9) <= duration < high * (1 + 1e-9)
    assert high / low < 2 ** (1 / 8) * (1 + 1e-9)


@given(timed_jobs, st.floats(min_value=0.01, max_value=1.0))
def test_a_quantile_is_in_the_bucket_of_the_exact_one(
    jobs: list[tuple[float, int]], q: float
) -> None:
    durations = durations_of(jobs)
    if not jobs:
        assert durations.quantile(q) == 0.0
        return
    ordered = sorted(duration for duration, _ in jobs)
    exact = ordered[max(1, math.ceil(q * len(ordered))) - 1]
    estimate = durations.quantile(q)
    assert estimate <= durations.longest
    bucket = bucket_of(exact)
    assert estimate == min(bucket_value(bucket), durations.longest)


@given(timed_jobs, timed_jobs, timed_jobs)
def test_merging_is_associative_and_commutative(
    a: list[tuple[float, int]], b: list[tuple[float, int]], c: list[tuple[float, int]]
) -> None:
    da, db, dc = durations_of(a), durations_of(b), durations_of(c)
    left = merged(merged(da, db), dc)
    right = merged(da, merged(db, dc))
    assert same(left, right)
    assert same(merged(da, db), merged(db, da))
    # And the same as counting every job in one place.
    assert same(left, durations_of(a + b + c))


@given(timed_jobs)
def test_the_slowest_are_the_longest_few_one_per_job(jobs: list[tuple[float, int]]) -> None:
    durations = durations_of(jobs)
    longest_per_seq: dict[int, float] = {}
    for duration, seq in jobs:
        longest_per_seq[seq] = max(duration, longest_per_seq.get(seq, 0.0))
    expected = sorted(longest_per_seq.items(), key=lambda item: (-item[1], item[0]))
    assert [(s, seq) for s, seq, _ in durations.slowest] == [
        (s, seq) for seq, s in expected[:SLOWEST_KEPT]
    ]
    assert durations.count == len(jobs)


def test_memory_stays_bounded_whatever_the_number_of_jobs() -> None:
    durations = Durations()
    for seq in range(100_000):
        durations.add((seq % 997) * 1e-4, seq)
    assert len(durations.counts) < BUCKETS
    assert len(durations.slowest) == SLOWEST_KEPT


def test_the_stored_form_reads_back_the_same() -> None:
    durations = durations_of([(0.5, 3), (2e-7, 4), (12.0, 9)])
    document = json.loads(json.dumps(durations.as_json()))
    assert same(Durations.from_json(document), durations)
    assert same(Durations.from_json(None), Durations())


def test_a_workers_keys_are_pairs_and_read_back_as_pairs() -> None:
    worker = Durations()
    worker.add(0.25, (7, 3))
    document = json.loads(json.dumps(worker.as_json()))
    assert Durations.from_json(document).slowest == [(0.25, (7, 3), None)]


def test_resolving_names_the_slow_jobs_and_leaves_out_the_unknown() -> None:
    worker = Durations()
    worker.add(0.5, (1, 0))
    worker.add(0.25, (2, 0))
    known = {(1, 0): (40, "job-40")}
    resolved = worker.resolved(known.get)
    assert resolved.slowest == [(0.5, 40, "job-40")]
    assert resolved.count == 2  # every job is still counted


def test_a_worker_sends_only_what_could_be_among_the_slowest() -> None:
    worker = WorkerDurations()
    for index in range(SLOWEST_KEPT):
        worker.add(1.0 + index, (1, index))
    first = from_wire(worker.take())
    assert len(first.slowest) == SLOWEST_KEPT
    worker.add(0.5, (1, 10))  # below this worker's five slowest: counted, not named
    worker.add(9.0, (1, 11))
    second = from_wire(worker.take())
    assert second.count == 2
    assert [key for _, key, _ in second.slowest] == [(1, 11)]
    assert worker.take() is None


def test_a_worker_counts_trivial_jobs_in_bulk() -> None:
    worker = WorkerDurations()
    # As the sequential loop does: the one job of 1000 that was not trivial is counted and
    # named; the rest are only in the count and the total of the take.
    worker.counts[bucket_of(0.002)] = 1
    worker.name(0.002, (1, 5))
    delta = from_wire(worker.take(1000, 0.002 + 999 * 3e-7))
    assert delta.count == 1000
    assert delta.counts[0] == 999
    assert math.isclose(delta.total, 0.002 + 999 * 3e-7)
    assert delta.quantile(0.5) < SMALLEST
    assert delta.longest == 0.002
    assert delta.slowest == [(0.002, (1, 5), None)]
    assert worker.take() is None


def test_durations_read_as_people_write_them() -> None:
    assert format_seconds(1e-7) == "<1µs"
    assert format_seconds(420e-6) == "420µs"
    assert format_seconds(0.0123) == "12.3ms"
    assert format_seconds(4.56) == "4.56s"
    assert format_seconds(723) == "12m03s"
    assert format_seconds(3 * 3600 + 4 * 60) == "3h04m"
