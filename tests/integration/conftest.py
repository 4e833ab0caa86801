"""Integration tests: a fresh network-namespace lab per test (see tests/lab).

Setup takes about 0.5 s and teardown about 0.1 s, so the lab is function-scoped: every test
starts from clean namespaces, an empty Postfix queue and an empty receiver log.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# `python -m pytest` puts the repo root on sys.path, plain `pytest` does not: make both work.
_REPO = str(Path(__file__).resolve().parents[2])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

from tests.lab import Lab, missing_requirements  # noqa: E402
from tests.lab.appliance import Appliance  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "integration: needs root and builds network namespaces (tests/lab)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Everything under tests/integration is an integration test; `-m "not integration"` skips it.
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.integration)


def _skip_unless_lab_possible() -> None:
    problems = missing_requirements()
    if problems:
        pytest.skip(f"lab unavailable: {'; '.join(problems)}")


def _prefix(n: int = 0) -> str:
    # Unique per process (parallel runs, xdist workers); n tells apart labs within one test.
    return f"mxk{os.getpid()}" + (f"x{n}" if n else "")


@pytest.fixture
def lab() -> Iterator[Lab]:
    """The default lab (dual-stack MX set), torn down after the test."""
    _skip_unless_lab_possible()
    with Lab(_prefix()) as the_lab:
        yield the_lab


@pytest.fixture
def make_lab() -> Iterator[Callable[..., Lab]]:
    """Factory for labs with other settings, e.g. make_lab(mx=MX_IPV4_ONLY)."""
    _skip_unless_lab_possible()
    labs: list[Lab] = []

    def factory(**kwargs: Any) -> Lab:
        the_lab = Lab(_prefix(len(labs) + 1), **kwargs)
        labs.append(the_lab)
        return the_lab.start()

    yield factory
    for the_lab in reversed(labs):
        the_lab.stop()


@pytest.fixture
def appliance(lab: Lab) -> Iterator[Appliance]:
    """mxknockd in the lab's fw namespace, not started: call .start(config_text(...))."""
    the_appliance = Appliance(lab.ns("fw"), lab.workdir / "fw")
    yield the_appliance
    the_appliance.stop()
    if the_appliance.process is not None and the_appliance.process.returncode not in (0, None):
        print(the_appliance.log())
