"""The Lua scripts against a real redis-server, called as a redis-py retry would call them."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from redis_support import RedisServer, serve

from taskrunner.backends.redis import RedisConnection, run_key

NAME = "scripts"
WID = "w1"


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    yield from serve(tmp_path_factory.mktemp("redis"))


@pytest.fixture
def connection(redis_server: RedisServer) -> Iterator[RedisConnection]:
    redis_server.client().flushall()
    connection = RedisConnection(redis_server.url)
    yield connection
    connection.close()


def _keys(*parts: str) -> list[str]:
    return [run_key(NAME, part) for part in parts]


POP_KEYS = _keys(
    "waiting", "payloads", "leases", "tokens", "leased", "outcomes", f"held:{WID}", "meta",
    "pace", f"popped:{WID}", "started", "suspects", "missed", "alone",
)  # fmt: skip
REPORT_KEYS = _keys(
    "leases", "tokens", "payloads", "leased", "outcomes", f"held:{WID}", "started", "suspects",
    "missed", f"reported:{WID}", "wake",
)  # fmt: skip
PUSH_KEYS = _keys("waiting", "payloads", "fed")


def _push(connection: RedisConnection, jobs: dict[str, bytes]) -> None:
    """A batch as the executor pushes it: ids, payload lengths, payloads each with a comma."""
    lengths = " ".join(str(len(payload)) for payload in jobs.values())
    body = b"".join(payload + b"," for payload in jobs.values())
    assert connection.run("push", PUSH_KEYS, [10, " ".join(jobs), lengths, body]) > 0


def _pop(connection: RedisConnection, token: str, wanted: int) -> list[bytes]:
    """The ids leased by one pop (of worker WID, holding nothing)."""
    reply = connection.run("pop", POP_KEYS, [wanted, 30000, token, 1, 0, 1])
    return reply[4].split() if len(reply) > 4 else []


def _lease_one(connection: RedisConnection) -> str:
    _push(connection, {"1:0": b"7"})
    reply = connection.run("pop", POP_KEYS, [1, 30000, f"{WID}:1", 1, 0, 1])
    assert reply[4:] == [b"1:0", b"1", b"7,"], reply
    return f"{WID}:1"


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


def test_a_report_of_a_lease_partly_lost_settles_only_the_jobs_still_held(
    connection: RedisConnection,
) -> None:
    _push(connection, {"3:0": b"0", "3:1": b"1", "3:2": b"2"})
    assert _pop(connection, f"{WID}:1", 3) == [b"3:0", b"3:1", b"3:2"]
    # Job 3:1's lease expires (as if WID stalled past it) and another worker takes it.
    connection.client.zadd(run_key(NAME, "leases"), {"3:1": 0})
    other = _keys("held:w2", "popped:w2")
    keys = [*POP_KEYS[:6], other[0], POP_KEYS[7], POP_KEYS[8], other[1], *POP_KEYS[10:]]
    reply = connection.run("pop", keys, [3, 30000, "w2:1", 1, 0, 1])
    assert reply[4] == b"3:1", "the job of the lost lease did not go back without an attempt"
    refused = connection.run("report", REPORT_KEYS, ["r1", f"{WID}:1", "3:0 3:1 3:2", "{}"])
    assert refused == [b"3:1"]
    entries = connection.client.lrange(run_key(NAME, "outcomes"), 0, -1)
    assert entries == [b"3:0 3:1 3:2\n3:1\n{}"], "the controller is not told which were refused"
    # Still leased to w2: its payload and lease are there for it to report.
    assert connection.client.hget(run_key(NAME, "tokens"), "3:1") == b"w2:1"
    assert connection.client.hget(run_key(NAME, "payloads"), "3:1") == b"1"
    assert connection.client.hget(run_key(NAME, "payloads"), "3:0") is None


def test_a_report_leaves_one_token_for_a_waiting_controller(connection: RedisConnection) -> None:
    token = _lease_one(connection)
    connection.run("report", REPORT_KEYS, ["r1", token, "1:0", "{}"])
    wake = run_key(NAME, "wake")
    assert connection.client.llen(wake) == 1
    connection.wait_for_token(wake, 30.0)  # returns at once: the token is there
    assert connection.client.llen(wake) == 0, "the wait did not take the token"
