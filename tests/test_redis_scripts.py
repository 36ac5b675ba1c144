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
    "missed", f"reported:{WID}",
)  # fmt: skip


def _lease_one(connection: RedisConnection) -> str:
    connection.run("push", _keys("waiting", "payloads"), [10, "1:0", b"7"])
    reply = connection.run("pop", POP_KEYS, [1, 30000, f"{WID}:1", 1, 0, 1])
    assert reply[4:] == [b"1:0", b"7"], reply
    return f"{WID}:1"


def test_a_report_retried_with_its_request_id_is_applied_once_and_refuses_nothing(
    connection: RedisConnection,
) -> None:
    token = _lease_one(connection)
    outcome = json.dumps({"i": "1:0", "ok": 1, "b": 0.1})
    first = connection.run("report", REPORT_KEYS, ["r1", "1:0", token, outcome])
    again = connection.run("report", REPORT_KEYS, ["r1", "1:0", token, outcome])
    assert first == [] and again == [], "a retry of an applied report refused its jobs"
    assert connection.client.lrange(run_key(NAME, "outcomes"), 0, -1) == [outcome.encode()]
    # A new report with the same token is a stale worker's: refused.
    assert connection.run("report", REPORT_KEYS, ["r2", "1:0", token, outcome]) == [b"1:0"]


def test_a_retried_report_gives_the_first_answer_of_refusals(
    connection: RedisConnection,
) -> None:
    _lease_one(connection)
    outcome = json.dumps({"i": "1:0", "ok": 1})
    first = connection.run("report", REPORT_KEYS, ["r1", "1:0", "w1:99", outcome])
    again = connection.run("report", REPORT_KEYS, ["r1", "1:0", "w1:99", outcome])
    assert first == again == [b"1:0"]
    assert connection.client.llen(run_key(NAME, "outcomes")) == 0
