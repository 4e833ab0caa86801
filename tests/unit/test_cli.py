"""The mxknock CLI: offline commands, exit codes, and talking to a fake daemon."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import yaml

from appliance import cli, compiler, config
from appliance.config import ConfigError, FieldError

BAD_YAML = "mode: unlisting\nmx1: [192.0.2.10]\nwindow: 0\n"  # no mx2, window out of range


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def missing_socket(sock_dir: Path) -> str:
    return str(sock_dir / "nobody-home.sock")


# ---- offline -------------------------------------------------------------------------------


def test_check_default(capsys):
    code, out, err = run(capsys, "check", "--default")
    assert code == cli.EXIT_OK
    assert out.strip() == "valid: mode unlisting, families ipv4, ipv6"
    assert err == ""


def test_check_good_file(capsys, tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("mode: nolisting\nmx1: 192.0.2.10\nmx2: 192.0.2.20\n")
    code, out, _ = run(capsys, "check", str(path))
    assert code == cli.EXIT_OK
    assert "mode nolisting, families ipv4" in out


def test_check_bad_file(capsys, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_YAML)
    code, out, err = run(capsys, "check", str(path))
    assert code == cli.EXIT_INVALID
    assert out == ""
    assert "mxknock: refused:" in err
    assert "  mx2: missing" in err
    assert "  window: must be from 1 to 86400" in err


def test_check_missing_file(capsys, tmp_path):
    code, _, err = run(capsys, "check", str(tmp_path / "nope.yaml"))
    assert code == cli.EXIT_INVALID
    assert "(file): cannot read" in err


def test_check_stdin(capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(config.default_text()))
    code, out, _ = run(capsys, "check", "-")
    assert code == cli.EXIT_OK
    assert "valid" in out


def test_check_json(capsys):
    code, out, _ = run(capsys, "--json", "check", "--default")
    assert code == cli.EXIT_OK
    assert json.loads(out) == {"valid": True, "mode": "unlisting", "families": ["ipv4", "ipv6"]}


@pytest.mark.parametrize("argv", [("check", "--default", "--json"), ("--json", "check", "--default", "--json")])
def test_json_also_after_the_subcommand(capsys, argv):
    code, out, _ = run(capsys, *argv)
    assert code == cli.EXIT_OK
    assert json.loads(out)["valid"] is True


def test_without_json_anywhere_the_output_is_text(capsys):
    _, out, _ = run(capsys, "check", "--default")
    with pytest.raises(ValueError):
        json.loads(out)


def test_check_bad_file_json(capsys, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_YAML)
    code, out, err = run(capsys, "--json", "check", str(path))
    assert code == cli.EXIT_INVALID
    reply = json.loads(out)
    assert {e["field"] for e in reply["errors"]} == {"mx2", "window"}
    assert "mx2" in err


def test_rules_default(capsys):
    code, out, _ = run(capsys, "rules", "--default")
    assert code == cli.EXIT_OK
    assert out == compiler.compile_config(config.default()).render()
    assert "*filter" in out and "-A MXKNOCK" in out and "COMMIT" in out


def test_rules_json(capsys):
    code, out, _ = run(capsys, "--json", "rules", "--default")
    assert code == cli.EXIT_OK
    assert json.loads(out) == {"rules": compiler.compile_config(config.default()).render()}


def test_rules_of_a_file(capsys, tmp_path):
    path = tmp_path / "v4.yaml"
    path.write_text("mode: nolisting\nmx1: 192.0.2.10\nmx2: 192.0.2.20\n")
    code, out, _ = run(capsys, "rules", str(path))
    assert code == cli.EXIT_OK
    assert "mxknock:open" in out
    assert "no IPv6 rules" in out


def test_default_config_prints_the_embedded_file(capsys):
    code, out, _ = run(capsys, "default-config")
    assert code == cli.EXIT_OK
    assert config.parse_yaml(out) == config.default()


def test_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["frobnicate"])
    assert info.value.code == cli.EXIT_INVALID
    capsys.readouterr()


# ---- without a daemon ---------------------------------------------------------------------------


def test_status_without_daemon(capsys, missing_socket):
    code, out, err = run(capsys, "--socket", missing_socket, "status")
    assert code == cli.EXIT_UNREACHABLE
    assert out == ""
    assert "mxknockd is not running" in err
    assert "systemctl start mxknockd" in err


def test_status_without_daemon_json(capsys, missing_socket):
    code, out, _ = run(capsys, "--json", "--socket", missing_socket, "status")
    assert code == cli.EXIT_UNREACHABLE
    assert "not running" in json.loads(out)["error"]


def test_apply_refuses_a_bad_file_before_asking_the_daemon(capsys, tmp_path, missing_socket):
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_YAML)
    code, _, err = run(capsys, "--socket", missing_socket, "apply", str(path))
    assert code == cli.EXIT_INVALID  # not EXIT_UNREACHABLE: the daemon was never asked
    assert "mx2: missing" in err


@pytest.mark.parametrize("command", ["whitelist", "trusted"])
def test_list_change_without_entries_is_refused_locally(capsys, missing_socket, command):
    code, _, err = run(capsys, "--socket", missing_socket, command, "add")
    assert code == cli.EXIT_INVALID
    assert f"{command}: give at least one" in err


# ---- with a (fake) daemon -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("health", "code"),
    [("ok", cli.EXIT_OK), ("warning", cli.EXIT_WARNING), ("critical", cli.EXIT_CRITICAL), ("bogus", cli.EXIT_FAILED)],
)
def test_status_exit_code_follows_health(capsys, serve, status_result, health, code):
    path = serve({"status": lambda args: status_result(health)})
    got, out, _ = run(capsys, "--socket", str(path), "status")
    assert got == code
    assert out.startswith(f"health: {health.upper()}")


def test_status_readable_output(capsys, serve, status_result):
    reply = status_result(
        "warning",
        warnings=["knock list mxknock4-32 is full"],
        pending={"seconds_left": 42.4},
        trusted={"ipv4": 2, "ipv6": 1, "total": 3},
    )
    reply["knock_lists"][0].update(evicting=True, oldest_age=3725.0)
    path = serve({"status": lambda args: reply})
    code, out, _ = run(capsys, "--socket", str(path), "status")
    assert code == cli.EXIT_WARNING
    assert "  warning: knock list mxknock4-32 is full" in out
    assert "mx1: 192.0.2.10, 2001:db8::10" in out
    assert "refused at mx2 (spam stopped)" in out
    assert "proven senders: 3 (IPv4 2, IPv6 1)" in out
    assert "oldest 62m05s  EVICTING" in out
    assert "rolls back in 42 s" in out


def test_status_json_exit_code_still_follows_health(capsys, serve, status_result):
    path = serve({"status": lambda args: status_result("critical", problems=["br_netfilter is off"])})
    code, out, _ = run(capsys, "--json", "--socket", str(path), "status")
    assert code == cli.EXIT_CRITICAL
    assert json.loads(out)["problems"] == ["br_netfilter is off"]


def test_whitelist_add_refused_entry(capsys, serve):
    seen = []

    def whitelist_add(args):
        seen.append(args)
        raise ConfigError(
            [FieldError("whitelist[+1]", "203.0.113.7/24 has host bits set; did you mean 203.0.113.0/24?")]
        )

    path = serve({"whitelist_add": whitelist_add})
    code, out, err = run(capsys, "--socket", str(path), "whitelist", "add", "198.51.100.1", "203.0.113.7/24")
    assert code == cli.EXIT_INVALID
    assert seen == [{"entries": ["198.51.100.1", "203.0.113.7/24"]}]
    assert out == ""
    assert "whitelist[+1]: 203.0.113.7/24 has host bits set" in err


def test_whitelist_add_accepted(capsys, serve):
    path = serve({"whitelist_add": lambda args: {"whitelist": ["203.0.113.0/24", *args["entries"]]}})
    code, out, _ = run(capsys, "--socket", str(path), "whitelist", "add", "198.51.100.1/32")
    assert code == cli.EXIT_OK
    assert out.splitlines() == ["203.0.113.0/24", "198.51.100.1/32"]


def test_whitelist_list_empty(capsys, serve):
    path = serve({"whitelist_list": lambda args: {"whitelist": []}})
    code, out, _ = run(capsys, "--socket", str(path), "whitelist", "list")
    assert code == cli.EXIT_OK
    assert out.strip() == "(whitelist is empty)"


def test_daemon_failure_without_fields_exits_1(capsys, serve):
    def confirm(args):
        raise RuntimeError("nothing is waiting for confirmation")

    path = serve({"confirm": confirm})
    code, _, err = run(capsys, "--socket", str(path), "confirm")
    assert code == cli.EXIT_FAILED
    assert "mxknock: nothing is waiting for confirmation" in err


def test_apply_sends_the_file(capsys, serve, tmp_path):
    seen = []
    path = serve(
        {"apply": lambda args: seen.append(args) or {"applied": True, "confirm_within": args["confirm_within"]}}
    )
    config_file = tmp_path / "mxknock.yaml"
    config_file.write_text(config.default_text())
    code, out, _ = run(capsys, "--socket", str(path), "apply", str(config_file), "--confirm-within", "30")
    assert code == cli.EXIT_OK
    assert seen == [{"yaml": config.default_text(), "confirm_within": 30.0}]
    assert "rolls back in 30 s" in out


def test_knocks_sorted(capsys, serve):
    reply = {
        "knock_lists": [
            {
                "name": "mxknock4-32",
                "entries": 2,
                "capacity": 100,
                "window": 4000,
                "knocks": [
                    {"address": "192.0.2.77", "age": 30.0, "time_left": 3970.0, "hits": 1},
                    {"address": "198.51.100.9", "age": 5.0, "time_left": 3995.0, "hits": 3},
                ],
            }
        ]
    }
    path = serve({"knocks": lambda args: reply})

    def rows(sort: str) -> list[str]:
        code, out, _ = run(capsys, "--socket", str(path), "knocks", "--sort", sort)
        assert code == cli.EXIT_OK
        return [line.split()[0] for line in out.splitlines() if line.startswith("  ") and "address" not in line]

    assert rows("age") == ["198.51.100.9", "192.0.2.77"]
    assert rows("address") == ["192.0.2.77", "198.51.100.9"]


@pytest.mark.parametrize(
    ("seconds", "text"), [(None, "-"), (59.9, "59s"), (125, "2m05s"), (7260, "2h01m"), (36 * 86400 - 60, "35d23h")]
)
def test_age_format(seconds, text):
    assert cli._age(seconds) == text


def test_check_output_matches_yaml_round_trip(capsys, tmp_path):
    # `mxknock check` of a file written from a Config's own to_yaml() is valid.
    path = tmp_path / "written.yaml"
    path.write_text(config.default().to_yaml())
    assert yaml.safe_load(path.read_text())["mode"] == "unlisting"
    code, _, _ = run(capsys, "check", str(path))
    assert code == cli.EXIT_OK
