"""The Lua scripts against a real redis-server, called as a redis-py retry would call them."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator

import pytest
import redis
from redis_support import RedisServer, feeding_executor

from taskrunner.backends.redis import RedisConnection, run_key
from taskrunner.records import Batch

NAME = "scripts"
WID = "w1"


@pytest.fixture
def connection(redis_server: RedisServer) -> Iterator[RedisConnection]:
    redis_server.client().flushall()
    connection = RedisConnection(redis_server.url)
    yield connection
    connection.close()


def _keys(*parts: str) -> list[str]:
    return [run_key(NAME, part) for part in parts]


POP_KEYS = _keys(
    "waiting", "payloads", "lease_expiry", "tokens", "leased", "outcomes", f"holds:{WID}", "meta",
    "pace", f"popped:{WID}", "started", "suspects", "missed", "alone", "lease_jobs", "lease_left",
)  # fmt: skip
REPORT_KEYS = _keys(
    "lease_expiry", "tokens", "payloads", "leased", "outcomes", f"holds:{WID}", "started",
    "suspects", "missed", f"reported:{WID}", "wake", "lease_jobs", "lease_left",
)  # fmt: skip
PUSH_KEYS = _keys("waiting", "payloads", "fed", "pushed_by", "lock")
RECALL_KEYS = _keys("waiting", "payloads", "recalled", "recalled_by", "alone", "lock")


def _push(connection: RedisConnection, jobs: dict[str, bytes], request: str = "") -> int:
    """A batch as the executor pushes it: ids, payload lengths, payloads each with a comma."""
    lengths = " ".join(str(len(payload)) for payload in jobs.values())
    body = b"".join(payload + b"," for payload in jobs.values())
    request = request or f"p{next(_requests)}"
    waiting = connection.run("push", PUSH_KEYS, [10, " ".join(jobs), lengths, body, request, ""])
    assert waiting > 0
    return waiting


_requests = itertools.count()


def _pop(connection: RedisConnection, token: str, wanted: int) -> list[bytes]:
    """The ids leased by one pop (of worker WID, holding nothing)."""
    reply = connection.run("pop", POP_KEYS, [wanted, 30000, token, 1, 0, 1])
    return reply[4].split() if len(reply) > 4 else []


def _lease_one(connection: RedisConnection) -> str:
    _push(connection, {"1:0": b"7"})
    reply = connection.run("pop", POP_KEYS, [1, 30000, f"{WID}:1", 1, 0, 1])
    assert reply[4:] == [b"1:0", b"1", b"7,"], reply
    return f"{WID}:1"


def test_a_pop_of_another_session_leases_nothing_and_names_the_new_one(
    connection: RedisConnection,
) -> None:
    meta = run_key(NAME, "meta")
    connection.client.hset(meta, mapping={"state": "running", "session": "s2"})
    _push(connection, {"1:0": b"7"})
    stale = connection.run("pop", POP_KEYS, [1, 30000, f"{WID}:1", 1, 0, 1, "s1"])
    assert stale == [b"running", 0, 0, 0, b"s2"], stale
    assert connection.client.lrange(run_key(NAME, "waiting"), 0, -1) == [b"1:0"]
    current = connection.run("pop", POP_KEYS, [1, 30000, f"{WID}:2", 1, 0, 1, "s2"])
    assert current[4:] == [b"1:0", b"1", b"7,"], current


def test_a_batch_pushed_is_leased_whole_with_its_payloads(connection: RedisConnection) -> None:
    jobs = {"2:0": b'"a b,c"', "2:1": b"\x80\x05pickle,\n", "2:2": b"[1,2]"}
    _push(connection, jobs)
    reply = connection.run("pop", POP_KEYS, [10, 30000, f"{WID}:1", 1, 0, 1])
    ids, lengths, body = reply[4].split(), [int(n) for n in reply[5].split()], reply[6]
    assert ids == [b"2:0", b"2:1", b"2:2"]
    payloads, at = [], 0
    for length in lengths:
        payloads.append(body[at : at + length])
        at += length + 1
    assert payloads == list(jobs.values())
    again = connection.run("pop", POP_KEYS, [10, 30000, f"{WID}:1", 1, 0, 1])
    # The same jobs (in the order of the worker's set of held ids).
    assert sorted(again[4].split()) == ids, "a retried pop did not give the same jobs back"


def test_a_report_retried_with_its_request_id_is_applied_once_and_refuses_nothing(
    connection: RedisConnection,
) -> None:
    token = _lease_one(connection)
    outcome = json.dumps({"b": 0.1})
    first = connection.run("report", REPORT_KEYS, ["r1", token, "1:0", outcome])
    again = connection.run("report", REPORT_KEYS, ["r1", token, "1:0", outcome])
    assert first == [] and again == [], "a retry of an applied report refused its jobs"
    entries = connection.client.lrange(run_key(NAME, "outcomes"), 0, -1)
    assert entries == [f"1:0\n\n{outcome}".encode()]
    # A new report with the same token is a stale worker's: refused.
    assert connection.run("report", REPORT_KEYS, ["r2", token, "1:0", outcome]) == [b"1:0"]


def test_a_retried_report_gives_the_first_answer_of_refusals(
    connection: RedisConnection,
) -> None:
    _lease_one(connection)
    outcome = json.dumps({"b": 0.1})
    first = connection.run("report", REPORT_KEYS, ["r1", "w1:99", "1:0", outcome])
    again = connection.run("report", REPORT_KEYS, ["r1", "w1:99", "1:0", outcome])
    assert first == again == [b"1:0"]
    assert connection.client.llen(run_key(NAME, "outcomes")) == 0


def _expire(connection: RedisConnection, token: str) -> None:
    """The lease `token` expires now (as if its worker stalled past it)."""
    assert connection.client.zadd(run_key(NAME, "lease_expiry"), {token: 0}, xx=True) == 0
    assert connection.client.zscore(run_key(NAME, "lease_expiry"), token) == 0


def _pop_as(connection: RedisConnection, worker: str, token: str, wanted: int) -> list[bytes]:
    """The ids leased by one pop of another worker, holding nothing."""
    other = _keys(f"holds:{worker}", f"popped:{worker}")
    keys = [*POP_KEYS[:6], other[0], POP_KEYS[7], POP_KEYS[8], other[1], *POP_KEYS[10:]]
    reply = connection.run("pop", keys, [wanted, 30000, token, 1, 0, 1])
    return reply[4].split() if len(reply) > 4 else []


def test_a_lease_lost_after_part_of_it_was_reported_gives_back_only_the_rest(
    connection: RedisConnection,
) -> None:
    _push(connection, {"3:0": b"0", "3:1": b"1", "3:2": b"2"})
    assert _pop(connection, f"{WID}:1", 3) == [b"3:0", b"3:1", b"3:2"]
    assert connection.run("report", REPORT_KEYS, ["r1", f"{WID}:1", "3:0", "{}"]) == []
    _expire(connection, f"{WID}:1")
    taken = _pop_as(connection, "w2", "w2:1", 3)
    assert sorted(taken) == [b"3:1", b"3:2"], "the lost lease did not give back exactly the rest"
    # WID comes back and reports them: refused, they are w2's now.
    refused = connection.run("report", REPORT_KEYS, ["r2", f"{WID}:1", "3:1 3:2", "{}"])
    assert sorted(refused) == [b"3:1", b"3:2"]
    entries = connection.client.lrange(run_key(NAME, "outcomes"), 0, -1)
    assert entries == [b"3:0\n\n{}"], "a refused part reached the controller"
    assert connection.client.hget(run_key(NAME, "tokens"), "3:1") == b"w2:1"
    assert connection.client.hget(run_key(NAME, "payloads"), "3:1") == b"1"
    assert connection.client.hget(run_key(NAME, "payloads"), "3:0") is None


def test_a_lease_whose_jobs_are_all_reported_ends(connection: RedisConnection) -> None:
    _push(connection, {"5:0": b"0", "5:1": b"1"})
    assert _pop(connection, f"{WID}:1", 2) == [b"5:0", b"5:1"]
    client = connection.client
    assert client.smembers(run_key(NAME, f"holds:{WID}")) == {f"{WID}:1".encode()}
    connection.run("report", REPORT_KEYS, ["r1", f"{WID}:1", "5:1", "{}"])
    assert client.zscore(run_key(NAME, "lease_expiry"), f"{WID}:1") is not None, (
        "ended half reported"
    )
    connection.run("report", REPORT_KEYS, ["r2", f"{WID}:1", "5:0", "{}"])
    assert client.zscore(run_key(NAME, "lease_expiry"), f"{WID}:1") is None
    assert client.hlen(run_key(NAME, "lease_jobs")) == 0
    assert client.hlen(run_key(NAME, "lease_left")) == 0
    assert client.scard(run_key(NAME, f"holds:{WID}")) == 0


def test_a_report_naming_a_job_twice_settles_it_once_and_keeps_the_lease(
    connection: RedisConnection,
) -> None:
    """The lease's count of jobs left goes by jobs settled, not ids named: else it would end
    with a job still out, and that job, never reclaimed, would be lost with its worker."""
    _push(connection, {"4:0": b"0", "4:1": b"1"})
    assert _pop(connection, f"{WID}:1", 2) == [b"4:0", b"4:1"]
    assert connection.run("report", REPORT_KEYS, ["r1", f"{WID}:1", "4:0 4:0", "{}"]) == []
    assert connection.client.hget(run_key(NAME, "lease_left"), f"{WID}:1") == b"1"
    _expire(connection, f"{WID}:1")
    assert _pop_as(connection, "w2", "w2:1", 2) == [b"4:1"]


def test_a_heartbeat_renews_the_leases_held_and_drops_those_ended(
    connection: RedisConnection,
) -> None:
    _push(connection, {"6:0": b"0"})
    _pop(connection, f"{WID}:1", 1)
    _push(connection, {"7:0": b"0"})
    _pop(connection, f"{WID}:2", 1)
    connection.run("report", REPORT_KEYS, ["r1", f"{WID}:1", "6:0", "{}"])
    _expire(connection, f"{WID}:2")
    beat_keys = _keys("lease_expiry", "tokens", f"holds:{WID}", "started", "lease_left")
    renewed = connection.run("heartbeat", beat_keys, [30000, WID, "7:0"])
    assert renewed == 1
    assert connection.client.zscore(run_key(NAME, "lease_expiry"), f"{WID}:2") > 0, "not renewed"
    assert connection.client.smembers(run_key(NAME, f"holds:{WID}")) == {f"{WID}:2".encode()}
    assert connection.client.smembers(run_key(NAME, "started")) == {b"7:0"}


def test_a_retried_pop_gives_back_only_the_jobs_not_reported_since(
    connection: RedisConnection,
) -> None:
    _push(connection, {"8:0": b"0", "8:1": b"1"})
    assert _pop(connection, f"{WID}:1", 2) == [b"8:0", b"8:1"]
    connection.run("report", REPORT_KEYS, ["r1", f"{WID}:1", "8:0", "{}"])
    assert _pop(connection, f"{WID}:1", 2) == [b"8:1"]


def test_a_report_leaves_one_token_for_a_waiting_controller(connection: RedisConnection) -> None:
    token = _lease_one(connection)
    connection.run("report", REPORT_KEYS, ["r1", token, "1:0", "{}"])
    wake = run_key(NAME, "wake")
    assert connection.client.llen(wake) == 1
    connection.wait_for_token(wake, 30.0)  # returns at once: the token is there
    assert connection.client.llen(wake) == 0, "the wait did not take the token"


def test_a_push_retried_with_its_request_id_queues_its_jobs_once(
    connection: RedisConnection,
) -> None:
    assert _push(connection, {"9:0": b"0", "9:1": b"1"}, request="s:1") == 2
    assert _push(connection, {"9:0": b"0", "9:1": b"1"}, request="s:1") == 2
    assert connection.client.lrange(run_key(NAME, "waiting"), 0, -1) == [b"9:0", b"9:1"]
    assert _push(connection, {"9:2": b"2"}, request="s:2") == 3


def test_a_pop_retried_after_its_token_was_forgotten_leases_nothing_more(
    connection: RedisConnection,
) -> None:
    """redis-py may retry a pop later than `popped` remembers it (a reply held up past the
    lease): the retry must not lease more jobs under the token, which would overwrite the
    lease's ids and leave the first ones in no lease, never reclaimed."""
    _push(connection, {"1:0": b"0", "1:1": b"1", "1:2": b"2", "1:3": b"3"})
    assert _pop(connection, f"{WID}:1", 2) == [b"1:0", b"1:1"]
    connection.client.delete(run_key(NAME, f"popped:{WID}"))
    assert _pop(connection, f"{WID}:1", 2) == [b"1:0", b"1:1"], "the retry leased more"
    _expire(connection, f"{WID}:1")
    assert sorted(_pop_as(connection, "w2", "w2:1", 4)) == [b"1:0", b"1:1", b"1:2", b"1:3"]


def test_a_suspect_whose_alone_lease_is_lost_unseen_twice_fails_as_lease_lost(
    connection: RedisConnection,
) -> None:
    """A job that kills its worker before the heartbeat tells Redis it started: lost three
    times unseen it counts as started, and so runs alone; lost alone, unseen, twice, it is
    the culprit. Six leases in all, not four more unseen ones alone; and not five: a suspect
    lost once unseen may only have waited in a worker lost for another reason."""
    _push(connection, {"1:0": b"0"})
    client = connection.client
    for lease in range(1, 7):
        assert _pop_as(connection, f"w{lease}", f"w{lease}:1", 1) == [b"1:0"], lease
        _expire(connection, f"w{lease}:1")
        assert client.llen(run_key(NAME, "outcomes")) == 0, f"failed after {lease} leases"
    assert _pop_as(connection, "w7", "w7:1", 1) == [], "the culprit was leased a seventh time"
    entries = client.lrange(run_key(NAME, "outcomes"), 0, -1)
    assert len(entries) == 1 and entries[0].startswith(b"1:0\n\n"), entries
    assert json.loads(entries[0].split(b"\n", 2)[2]) == {"lost": {"1:0": 2}}
    assert client.hget(run_key(NAME, "payloads"), "1:0") is None


def test_leases_that_expired_together_come_back_a_thousand_jobs_a_pop(
    connection: RedisConnection,
) -> None:
    """A lease may hold thousands of jobs: one pop reclaims at most a thousand, so that a
    mass expiry does not hold Redis in one long script; the next pops take the rest."""
    client = connection.client
    for batch in range(3):
        _push_many(connection, batch, 700)
        assert len(_pop(connection, f"{WID}:{batch + 1}", 700)) == 700
    for batch in range(3):
        _expire(connection, f"{WID}:{batch + 1}")
    # Each pop of w2 leases nothing (wanted 0) but reclaims; count what comes back each time.
    back = []
    for _ in range(4):
        before = client.llen(run_key(NAME, "waiting"))
        _pop_as(connection, "w2", f"w2:{len(back) + 1}", 0)
        back.append(client.llen(run_key(NAME, "waiting")) - before)
    assert back == [1000, 1000, 100, 0]
    assert client.zcard(run_key(NAME, "lease_expiry")) == 0
    assert client.hlen(run_key(NAME, "lease_jobs")) == client.hlen(run_key(NAME, "lease_left")) == 0
    waiting = client.lrange(run_key(NAME, "waiting"), 0, -1)
    assert sorted(waiting) == sorted(f"{b}:{i}".encode() for b in range(3) for i in range(700))


def test_a_lease_looked_at_in_part_whose_jobs_there_were_reported_is_reclaimed_on(
    connection: RedisConnection,
) -> None:
    """The budget ends inside a lease, and every id looked at there was reported already:
    nothing given back from it this call (which once made the script fail on "-0")."""
    client = connection.client
    _push_many(connection, 1, 998)
    assert len(_pop(connection, f"{WID}:1", 998)) == 998
    _push_many(connection, 2, 10)
    assert len(_pop(connection, f"{WID}:2", 10)) == 10
    connection.run("report", REPORT_KEYS, ["r1", f"{WID}:2", "2:0 2:1", "{}"])
    _expire(connection, f"{WID}:1")
    _expire(connection, f"{WID}:2")
    _pop_as(connection, "w2", "w2:1", 0)
    assert client.llen(run_key(NAME, "waiting")) == 998
    _pop_as(connection, "w2", "w2:2", 0)
    waiting = client.lrange(run_key(NAME, "waiting"), 0, -1)
    assert sorted(waiting) == sorted(
        [f"1:{index}".encode() for index in range(998)]
        + [f"2:{index}".encode() for index in range(2, 10)]
    )
    assert client.zcard(run_key(NAME, "lease_expiry")) == 0


def _push_many(connection: RedisConnection, batch: int, count: int) -> None:
    _push(connection, {f"{batch}:{index}": b"0" for index in range(count)})


def test_a_lease_reclaimed_in_part_and_renewed_keeps_the_rest(
    connection: RedisConnection,
) -> None:
    """Its worker was only slow: its heartbeat renews what is left of the lease; its reports
    of the jobs reclaimed are refused, of the rest accepted, and the lease then ends."""
    client = connection.client
    _push_many(connection, 1, 1500)
    assert len(_pop(connection, f"{WID}:1", 1500)) == 1500
    _expire(connection, f"{WID}:1")
    _pop_as(connection, "w2", "w2:1", 0)  # reclaims the first 1000
    beat_keys = _keys("lease_expiry", "tokens", f"holds:{WID}", "started", "lease_left")
    assert connection.run("heartbeat", beat_keys, [30000, WID, ""]) == 1
    ids = " ".join(f"1:{index}" for index in range(1500))
    refused = connection.run("report", REPORT_KEYS, ["r1", f"{WID}:1", ids, "{}"])
    assert len(refused) == 1000 and b"1:999" in refused and b"1:1000" not in refused
    assert client.zscore(run_key(NAME, "lease_expiry"), f"{WID}:1") is None, "the lease did not end"
    assert client.llen(run_key(NAME, "waiting")) == 1000


def test_recall_takes_back_the_jobs_waiting_and_the_suspects_waiting_alone(
    connection: RedisConnection,
) -> None:
    _push(connection, {"2:0": b"0", "2:1": b"1"})
    connection.client.rpush(run_key(NAME, "alone"), "1:7")
    taken = connection.run("recall", RECALL_KEYS, ["q1", ""])
    assert sorted(taken) == [b"1:7", b"2:0", b"2:1"]
    assert connection.run("recall", RECALL_KEYS, ["q1", ""]) == taken, "a retry got other ids"
    assert connection.client.llen(run_key(NAME, "alone")) == 0


def test_the_controllers_recall_takes_back_suspects_waiting_alone(
    connection: RedisConnection,
) -> None:
    """Through RedisExecutor.recall (the keys it passes): a suspect waiting for a worker that
    holds nothing is taken back with the jobs waiting, for resume, not left behind."""
    executor = feeding_executor(connection, NAME)
    assert executor.submit(Batch(1, range(3), ["a", "b", "c"])) == []
    client = connection.client
    assert client.lrem(run_key(NAME, "waiting"), 1, "1:2") == 1
    client.rpush(run_key(NAME, "alone"), "1:2")
    events = executor.recall()
    assert [(event.batch_id, sorted(event.indices)) for event in events] == [(1, [0, 1, 2])]
    assert executor.outstanding() == 0
    assert client.llen(run_key(NAME, "alone")) == 0


@pytest.mark.parametrize("script", ["push", "recall"])
def test_a_controller_whose_run_redis_lost_writes_nothing(
    connection: RedisConnection, script: str
) -> None:
    """The run's owner is gone (a flush, a restart without persistence): a push or a recall
    of the controller that took the lock is refused with RUN_LOST, and leaves no key."""
    owner_keys = [*PUSH_KEYS[:-1], run_key(NAME, "owner")]
    args: list[object] = [10, "1:0", "1", b"7,", "p1", "token"]
    if script == "recall":
        owner_keys, args = [*RECALL_KEYS[:-1], run_key(NAME, "owner")], ["q1", "token"]
    with pytest.raises(redis.ResponseError, match="RUN_LOST"):
        connection.run(script, owner_keys, args)
    assert connection.client.keys("*") == []


def test_a_pace_expires_once_its_time_has_passed(connection: RedisConnection) -> None:
    """--rate's next start time is kept only as long as it is ahead: a run Redis lost keeps
    no pace key for ever."""
    pace = run_key(NAME, "pace")
    assert connection.run("pace", [pace], [3, 100]) == 0
    assert 0 < connection.client.pttl(pace) <= 300 + 1000
    _push(connection, {"1:0": b"0", "1:1": b"1"})
    connection.run("pop", POP_KEYS, [2, 30000, f"{WID}:1", 1, 100, 1])
    assert 0 < connection.client.pttl(pace) <= 500 + 1000


def test_a_pop_tells_a_run_being_set_up_from_one_that_is_gone(
    connection: RedisConnection,
) -> None:
    """A run's settings are written (store.create) before its controller's loop starts and
    says "running" (RedisExecutor.start): a worker that pops in between must not be told that
    the run does not exist, as it is once its meta is gone (Redis lost it)."""
    meta = run_key(NAME, "meta")
    assert connection.run("pop", POP_KEYS, [1, 30000, f"{WID}:1", 1, 0, 1])[0] is None
    connection.client.hset(meta, mapping={"callback": "jobs:cb", "layout": "2"})
    assert connection.run("pop", POP_KEYS, [1, 30000, f"{WID}:2", 1, 0, 1])[0] == b"starting"
    connection.client.hset(meta, "state", "running")
    assert connection.run("pop", POP_KEYS, [1, 30000, f"{WID}:3", 1, 0, 1])[0] == b"running"
