"""The command line reads as plain text and hides nothing: every command in the top-level help,
every benchmark suite in `bench --help`, no reStructuredText markup in any help."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from appliance.cli import COMMANDS, _parser

ROOT = Path(__file__).resolve().parents[2]
MARKUP = re.compile(r"``|:(func|class|meth|mod|data|attr):`")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _all_helps(parser: argparse.ArgumentParser, path: str = "methtrader"
               ) -> list[tuple[str, str]]:
    out = [(path, parser.format_help())]
    for name, sub in _subparsers(parser).items():
        out += _all_helps(sub, f"{path} {name}")
    return out


def test_every_help_is_plain_text() -> None:
    helps = _all_helps(_parser())
    assert len(helps) > len(COMMANDS)
    marked = [path for path, text in helps if MARKUP.search(text)]
    assert marked == []


def test_the_top_level_help_lists_every_command() -> None:
    text = _parser().format_help()
    missing = [name for name in COMMANDS if not re.search(rf"^\s+{re.escape(name)}\b", text,
                                                          re.M)]
    assert missing == []
    assert set(_subparsers(_parser())) == set(COMMANDS)


def test_bench_offers_every_suite_in_benchmarks() -> None:
    suites = {p.stem for p in (ROOT / "benchmarks").glob("*.py") if not p.stem.startswith("_")}
    bench = _subparsers(_parser())["bench"]
    offered = next(a for a in bench._actions if a.dest == "suite").choices
    assert set(offered) == suites
    assert all(suite in bench.format_help() for suite in suites)


def test_false_alarms_is_a_mode_of_bench_drift_only(capsys) -> None:
    from appliance.cli import main

    bench = _subparsers(_parser())["bench"]
    assert "--false-alarms" in bench.format_help()
    assert main(["bench", "train", "--false-alarms"]) == 2
    assert "bench train takes no --false-alarms" in capsys.readouterr().err


def test_config_check_takes_its_file_as_every_command_does(tmp_path, capsys) -> None:
    """`config check --config FILE` was "unrecognized arguments": only a positional file."""
    from appliance.cli import main

    conf = tmp_path / "m.toml"
    conf.write_text("[trading]\nthreshold = 0.25\n")
    assert main(["config", "check", "--config", str(conf), "--json"]) == 0
    assert '"threshold": 0.25' in capsys.readouterr().out
    assert main(["config", "check", str(conf)]) == 0
    capsys.readouterr()
    other = tmp_path / "other.toml"
    other.write_text("")
    assert main(["config", "check", str(conf), "--config", str(other)]) == 2
    assert "two files given" in capsys.readouterr().err


def _refused(argv: list[str], capsys) -> str:
    """The parser's error line for ``argv`` (it exits 2, as for any bad flag)."""
    with pytest.raises(SystemExit) as exit_:
        _parser().parse_args(argv)
    assert exit_.value.code == 2
    return capsys.readouterr().err.splitlines()[-1]


@pytest.mark.parametrize("port", ["70000", "65536", "-1"])
def test_fake_bybit_refuses_a_port_outside_0_to_65535(port: str, capsys) -> None:
    """70000 listened on 4464 (the port wrapped), 65536 on a random port, -1 failed in
    getaddrinfo."""
    line = _refused(["fake-bybit", "--port", port], capsys)
    assert line.endswith("argument --port: must be in [0, 65535] (0 picks a free port)")


@pytest.mark.parametrize("limit", ["0", "-1"])
def test_fake_bybit_refuses_an_ip_limit_below_one(limit: str, capsys) -> None:
    """-1 was taken: every request was then answered HTTP 403."""
    line = _refused(["fake-bybit", "--ip-limit", limit], capsys)
    assert line.endswith("argument --ip-limit: must be 1 or more requests per 5 s")


@pytest.mark.parametrize("wait", ["nan", "inf", "-1"])
def test_backup_wait_is_a_finite_number_of_seconds(wait: str, capsys) -> None:
    line = _refused(["backup", "dest", "--wait", wait], capsys)
    assert line.endswith(f"argument --wait: {wait!r} is not a number of seconds, 0 or more")


@pytest.mark.parametrize("argv", [["run", "--for", "-5s"], ["run", "--until", "-.5h"],
                                  ["automl", "--timeout", "-1m"]])
def test_a_negative_duration_is_named_as_with_an_equals_sign(argv: list[str], capsys) -> None:
    """`--for -5s` was argparse's "expected one argument"; `--for=-5s` named the value."""
    line = _refused(argv, capsys)
    assert f"argument {argv[1]}: {argv[2]!r} is not a duration" in line


def test_the_running_appliances_answer_for_an_unknown_model_is_bad_input_too() -> None:
    """Through `run`, the registry's error comes back as text: an unknown model id is still
    UnknownModelId (exit 2), any other refusal a plain CommandFailed (exit 1)."""
    from appliance.commands import CommandFailed, UnknownModelId, _checked

    with pytest.raises(UnknownModelId, match=r"^no model 'm-x' in the registry"):
        _checked({"ok": False, "error": "ModelNotFound: no model 'm-x' in the registry"})
    with pytest.raises(CommandFailed) as other:
        _checked({"ok": False, "error": "LifecycleError: no model in group 'g'"})
    assert not isinstance(other.value, UnknownModelId)
    assert _checked({"ok": True, "moved": 1}) == {"ok": True, "moved": 1}
