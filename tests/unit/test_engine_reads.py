"""The engine's readers take the config and its ruleset as one pair, under the engine's lock
(issue 11's review: knocks, knock_reports and rules_text read them without it, so a reader
could pair a new config with the old ruleset in the middle of an apply). No kernel needed."""

from __future__ import annotations

import threading
from pathlib import Path

from appliance import config
from appliance.compiler import compile_config
from appliance.engine import Engine


def test_readers_wait_for_a_change_in_progress(tmp_path: Path) -> None:
    engine = Engine(tmp_path / "mxknock.yaml")
    engine.config = config.default()
    engine.ruleset = compile_config(engine.config)
    answers: list[str] = []
    applying = threading.Event()
    done = threading.Event()

    def change() -> None:  # what _put_in_force does: both replaced under the lock
        with engine._lock:
            applying.set()
            done.wait(5)
            engine.config = config.with_changes(engine.config, window=77)
            engine.ruleset = compile_config(engine.config)

    writer = threading.Thread(target=change)
    writer.start()
    applying.wait(5)
    reader = threading.Thread(target=lambda: answers.append(engine.rules_text()["rules"]))
    reader.start()
    reader.join(0.3)
    assert reader.is_alive(), "rules_text answered while a change held the lock"
    done.set()
    writer.join(5)
    reader.join(5)
    assert "--seconds 77" in answers[0]  # the pair after the change, not half of it
    config_now, ruleset_now = engine.in_force()
    assert ruleset_now == compile_config(config_now)
