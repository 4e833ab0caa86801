"""Shared helpers for the unit tests: pure logic, no root, no kernel, no network."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.database import DirectoryBasedExampleDatabase

from appliance import status
from appliance.control import ControlServer


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short directory for Unix sockets (sun_path is limited to 107 bytes; tmp_path can be longer)."""
    path = Path(tempfile.mkdtemp(prefix="mxk-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def serve(sock_dir: Path) -> Iterator[Callable[[dict[str, Any]], Path]]:
    """Start a real ControlServer with the given handlers in a thread; returns its socket path."""
    servers: list[ControlServer] = []

    def start(handlers: dict[str, Any]) -> Path:
        path = sock_dir / f"control{len(servers)}.sock"
        server = ControlServer(path, handlers)
        # As serve_in_thread(), but polling faster so close() does not wait half a second.
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        servers.append(server)
        return path

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def status_result() -> Callable[..., dict[str, Any]]:
    """Builds a status reply shaped like Engine.status(), for the CLI's readable output."""
    return _status_result


def _status_result(health: str, **extra: Any) -> dict[str, Any]:
    zero = {"ipv4": 0, "ipv6": 0, "total": 0}
    result: dict[str, Any] = {
        "health": health,
        "problems": [],
        "warnings": [],
        "config_path": "/etc/mxknock/mxknock.yaml",
        "config": {
            "mode": "unlisting",
            "window": 4000,
            "smtp_port": 25,
            "mx1": ["192.0.2.10", "2001:db8::10"],
            "mx2": ["192.0.2.20", "2001:db8::20"],
        },
        "filtering_verified": health != "critical",
        "bridge": None,
        # Every counter the daemon reports (status.COUNTERS), some of them non-zero.
        "counters": {
            **{name: dict(zero) for name in status.COUNTERS},
            "knocks": {"ipv4": 7, "ipv6": 3, "total": 10},
            "refused": {"ipv4": 40, "ipv6": 2, "total": 42},
        },
        "knock_lists": [
            {
                "name": "mxknock4-32",
                "exists": True,
                "entries": 5,
                "live": 4,
                "capacity": 100,
                "window": 4000,
                "oldest_age": 4100.0,
                "evicting": False,
            }
        ],
        "pending": None,
    }
    result.update(extra)
    return result


# Property-based fuzzing (tests/unit/test_fuzz_*.py): `ci` is bounded and repeatable (the
# default, run by `make unit`); `fuzz` is the long run of `make fuzz` (HYPOTHESIS_PROFILE=fuzz).
settings.register_profile(
    "ci",
    max_examples=200,
    deadline=1000,  # ms: the "a refusal within a second"
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "fuzz",
    max_examples=5000,
    deadline=1000,
    derandomize=False,
    # Failures found are replayed first next time; .pytest_cache is already ignored by git.
    database=DirectoryBasedExampleDatabase(".pytest_cache/hypothesis"),
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
