"""Issue 11, hole 7: bad input and damaged state give one line naming the problem, exit 2 for
bad input and 1 for a failure, no traceback, and nothing written."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from tests.e2e.conftest import METHTRADER, methtrader, status_json
from tests.e2e.safety_helpers import QUIET, copy_state, one_error_line, run_briefly
from tests.statedir_helpers import damage_blocks

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def closed_port() -> int:
    """A loopback port with nothing listening: an exchange that is down."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def ran_once(tmp_path_factory) -> Path:
    state = tmp_path_factory.mktemp("base") / "state"
    run_briefly(state)
    return state


@pytest.fixture
def state(ran_once: Path, tmp_path: Path) -> Path:
    return copy_state(ran_once, tmp_path / "state")


# -- config: exit 2, and nothing starts ----------------------------------------------------

@pytest.mark.parametrize("text, needle", [
    ("[trading]\nmax_daily_loss = nan\n", "'trading.max_daily_loss'"),
    ("[trading]\nmax_daily_loss = inf\n", "'trading.max_daily_loss'"),
    ("[sim]\nslippage_bps = -nan\n", "'sim.slippage_bps'"),
    ("[general]\nspeed = 60\n".encode("utf-16"), "not UTF-8"),
    (b"[general]\nstate_dir = \"\xff\xfe\"\n", "not UTF-8"),
])
def test_a_bad_config_file_is_refused_by_check_and_by_run(tmp_path: Path, text, needle) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_bytes(text if isinstance(text, bytes) else text.encode())
    assert needle in one_error_line(methtrader("config", "check", str(cfg), check=False), 2)
    out = methtrader("run", "--config", str(cfg), "--state-dir", str(tmp_path / "s"), *QUIET,
                     check=False)
    assert needle in one_error_line(out, 2) and not (tmp_path / "s").exists()


def test_a_config_that_never_ends_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    out = methtrader("config", "check", "/dev/zero", check=False, timeout=30)
    assert "larger than" in one_error_line(out, 2)


@pytest.mark.parametrize("args, env, needle", [
    (["--speed", "nan"], {}, "'general.speed'"),
    (["--speed", "inf"], {}, "'general.speed'"),
    ([], {"METHTRADER__TRADING__MAX_DAILY_LOSS": "nan"}, "'trading.max_daily_loss'"),
    ([], {"METHTRADER_WEBHOOK_URL": "not a url"}, "METHTRADER_WEBHOOK_URL"),
    ([], {"METHTRADER_WEBHOOK_URL": "ftp://hooks.example/abc"}, "METHTRADER_WEBHOOK_URL"),
])
def test_bad_flags_and_environment_start_nothing(tmp_path: Path, args, env, needle) -> None:
    out = methtrader("run", "--state-dir", str(tmp_path / "s"), *QUIET, *args, env=env,
                     check=False)
    assert needle in one_error_line(out, 2) and not (tmp_path / "s").exists()


def test_config_check_refuses_an_invalid_webhook_and_never_prints_it(tmp_path: Path) -> None:
    url = "https://hooks.example.com/services/T0/B0/secret token"
    out = methtrader("config", "check", env={"METHTRADER_WEBHOOK_URL": url}, check=False)
    line = one_error_line(out, 2)
    assert "METHTRADER_WEBHOOK_URL" in line and "secret" not in out.stderr + out.stdout


# -- the state dir itself -------------------------------------------------------------------

@pytest.mark.parametrize("command", [["run", *QUIET], ["train"], ["automl"], ["distill"],
                                     ["discover"], ["config", "check"]])
def test_a_state_dir_that_is_a_file_is_refused(tmp_path: Path, command: list[str]) -> None:
    """train, automl and distill said "Not a directory (.../bus)" with exit 1, discover
    that clock.json cannot be read, and config check printed the config (exit 0)."""
    target = tmp_path / "file"
    target.write_text("not a directory")
    out = methtrader(*command, "--state-dir", str(target), check=False)
    assert f"{target} is not a directory" in one_error_line(out, 2)
    assert target.read_text() == "not a directory"


@pytest.mark.parametrize("command", [["train", "NOSUCH"], ["automl", "NOSUCH"],
                                     ["distill", "NOSUCH"], ["distill"]])
def test_training_commands_create_no_state_dir_on_bad_input(tmp_path: Path,
                                                           command: list[str]) -> None:
    """They said "unknown group(s)" (or "backfill first"), exit 2, after creating
    <state>/bus/ at the mistyped path."""
    target = tmp_path / "typo" / "state"
    out = methtrader(*command, "--state-dir", str(target), check=False)
    assert f"{target} does not exist" in one_error_line(out, 2)
    assert not (tmp_path / "typo").exists()


def test_a_read_only_state_dir_is_refused(tmp_path: Path) -> None:
    if os.getuid() == 0:  # root writes through mode bits: use a file system that refuses it
        target = Path("/sys/kernel")
        if not target.is_dir():
            pytest.skip("needs /sys/kernel (read-only for root) or a non-root user")
    else:
        target = tmp_path / "ro"
        target.mkdir()
        target.chmod(0o500)
    before = sorted(p.name for p in target.iterdir())
    out = methtrader("run", "--state-dir", str(target), *QUIET, check=False)
    assert "cannot be written" in one_error_line(out, 2)
    assert sorted(p.name for p in target.iterdir()) == before


# -- damaged state: exit 1, the damaged file untouched ------------------------------------

def test_a_damaged_duckdb_file_is_named_and_left_as_it_was(state: Path) -> None:
    db = state / "methtrader.duckdb"
    db.write_bytes(os.urandom(64 * 1024))
    before = digest(db)
    shutil.rmtree(state / "bus")
    out = run_briefly(state, check=False)
    assert "not a usable DuckDB file" in one_error_line(out, 1)
    assert digest(db) == before and not (state / "bus").exists()
    assert "DuckDB" in one_error_line(methtrader("status", "--state-dir", str(state),
                                                 check=False), 1)


@pytest.mark.parametrize("table", ["audit_log", "candles"])
def test_a_damaged_block_in_duckdb_stops_run_with_maintenance_mode_on(state: Path,
                                                                     table: str) -> None:
    """audit_log is read while `run` starts, candles once its services run: either way it stops
    at the first damaged read, in one line, and nothing trades until an operator resumes."""
    assert damage_blocks(state / "methtrader.duckdb", table)
    out = methtrader("run", "--state-dir", str(state), "--for", "20s", *QUIET, timeout=120,
                     check=False)
    line = one_error_line(out, 1)
    assert "methtrader.duckdb is damaged" in line and "maintenance mode ON" in line
    status = methtrader("status", "--json", "--state-dir", str(state), check=False)
    report = json.loads(status.stdout)
    assert report["maintenance_mode"] is True and not report["running"]
    assert report["maintenance_why"].startswith("by appliance: fatal: ")
    assert "methtrader.duckdb is damaged" in report["maintenance_why"]  # why it is ON
    if table == "candles":  # what status reads itself: the damage is its error, the rest shown
        assert "is damaged" in one_error_line(status, 1) and "checksum" in report["store_error"]


@pytest.mark.parametrize("content", ['{"market_time": NaN}', '{"market_time": 1e300}',
                                     '{"market_time": "soon"}', "garbage", "[]"])
def test_a_damaged_clock_file_is_named(state: Path, content: str) -> None:
    (state / "clock.json").write_text(content)
    out = run_briefly(state, check=False)
    assert "clock.json is damaged" in one_error_line(out, 1)
    assert (state / "clock.json").read_text() == content


@pytest.mark.parametrize("command", ["promote", "demote", "pin", "unpin"])
def test_a_model_id_the_registry_does_not_have_is_bad_input(state: Path, command: str) -> None:
    out = methtrader(command, "m-none", "--reason", "typo", "--state-dir", str(state),
                     check=False)
    assert "no model 'm-none' in the registry" in one_error_line(out, 2)


def test_a_damaged_job_queue_is_named_in_one_line(state: Path) -> None:
    queue = state / "queue.db"
    with open(queue, "r+b") as f:
        f.write(os.urandom(8192))
    line = one_error_line(run_briefly(state, check=False), 1)
    assert "queue.db is not a usable SQLite file" in line and "aside" in line


@pytest.mark.parametrize("content", ["not json", '{"wallet": "NaN", "next_id": 1, '
                                     '"positions": {}}', '{"wallet": "1000"}'])
def test_a_damaged_sim_account_is_named(state: Path, content: str) -> None:
    (state / "sim_account.json").write_text(content)
    out = run_briefly(state, check=False)
    assert "sim_account.json is damaged" in one_error_line(out, 1)
    assert (state / "sim_account.json").read_text() == content


def test_status_on_a_damaged_bus_says_so_in_one_line(state: Path) -> None:
    (state / "bus" / "cache.db").write_bytes(os.urandom(8192))
    line = one_error_line(methtrader("status", "--state-dir", str(state), check=False), 1)
    assert "bus" in line and "damaged" in line


@pytest.mark.parametrize("args, needle", [
    (["backtest", "--symbols", "5"], "bench backtest takes no --symbols"),
    (["trading", "--symbols", "999"], "--symbols must be in [1, "),
])
def test_a_bench_flag_a_suite_cannot_take_is_refused(args: list[str], needle: str) -> None:
    out = methtrader("bench", *args, check=False)
    assert needle in one_error_line(out, 2) and out.stdout == ""


# -- the exchange is down -----------------------------------------------------------------

@pytest.mark.parametrize("command", [["discover"], ["backfill", "BTCUSDT", "--days", "1"]])
def test_discover_and_backfill_with_the_exchange_down_fail_in_one_line(
        tmp_path: Path, command: list[str]) -> None:
    out = methtrader(*command, "--json", "--state-dir", str(tmp_path / "s"), "--exchange",
                     "bybit", "--base-url", f"http://127.0.0.1:{closed_port()}", check=False,
                     env={"METHTRADER__BYBIT__MAX_RETRIES": "1"})
    assert "the exchange failed" in one_error_line(out, 1)
    assert out.stdout == ""


def test_backfill_of_a_symbol_the_exchange_does_not_list_is_refused_by_name(
        tmp_path: Path) -> None:
    """It was a KeyError traceback from the sim market, after the backfill had begun."""
    out = methtrader("backfill", "BTCUSDT", "NOSUCHUSDT", "ethusdt", "--days", "1",
                     "--state-dir", str(tmp_path / "s"), check=False)
    line = one_error_line(out, 2)
    assert "NOSUCHUSDT, ethusdt not listed" in line and "did you mean ETHUSDT?" in line
    assert not list((tmp_path / "s").rglob("*.parquet"))  # nothing fetched, not even BTC


@pytest.mark.parametrize("content", ["date,open,high,low,close,volume\n"
                                     "2022-01-01,1,2,0.5,1.5,10\nxx,yy\n", None])
def test_run_on_a_replay_folder_with_no_usable_file_says_which_and_why(
        tmp_path: Path, content: str | None) -> None:
    """It said "replay: no candle series in []"."""
    folder = tmp_path / "candles"
    folder.mkdir()
    if content is not None:
        (folder / "FOOUSDT.csv").write_text(content)
    out = methtrader("run", "--exchange", "replay", "--replay-folder", str(folder),
                     "--until", "10m", "--metrics-port", "0", "--state-dir",
                     str(tmp_path / "s"), check=False)
    line = one_error_line(out, 1)
    assert "no usable candle files" in line
    assert ("FOOUSDT.csv: line 3 has 2 fields" in line) if content else ("empty" in line)


def test_fake_bybit_on_a_port_in_use_names_the_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = methtrader("fake-bybit", "--port", str(port), check=False, timeout=30)
    line = one_error_line(out, 1)
    assert f"cannot listen on 127.0.0.1:{port}" in line and "pick another --port" in line


@pytest.mark.parametrize("host", ["999.1.1.1", "192.0.2.1"])
def test_fake_bybit_on_a_host_it_cannot_listen_on_names_the_host(host: str) -> None:
    """A name that does not resolve, or an address that is not this machine's, said "pick
    another --port"."""
    out = methtrader("fake-bybit", "--host", host, "--port", "0", check=False, timeout=30)
    line = one_error_line(out, 1)
    assert f"cannot listen on {host}:0" in line and line.endswith("pick another --host")


def test_fake_bybit_writes_an_ipv6_host_in_brackets() -> None:
    """Where the host has an IPv6 loopback the listening line brackets it; where it has none,
    the refusal does, and names --host."""
    with socket.socket(socket.AF_INET6) as probe:
        try:
            probe.bind(("::1", 0))
        except OSError:
            out = methtrader("fake-bybit", "--host", "::1", "--port", "0", check=False,
                             timeout=30)
            line = one_error_line(out, 1)
            assert "cannot listen on [::1]:0" in line and line.endswith("pick another --host")
            return
    proc = subprocess.Popen([*METHTRADER, "fake-bybit", "--host", "::1", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline().strip()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
    assert re.fullmatch(r"fake-bybit listening on http://\[::1\]:\d+", line), line


@pytest.mark.parametrize("args, says", [
    (("--warm-days", "900"), "--warm-days: must be in [0, 833] days"),
    (("--warm-days", "-1"), "--warm-days: must be in [0, 833] days"),
    (("--warm-days", "300", "--pairs", "100"), "would keep 30000 pair-days computed"),
    (("--warm-days", "abc"), "--warm-days: expected a whole number, got 'abc'"),
    (("--pairs", "many"), "--pairs: expected a whole number, got 'many'"),
])
def test_fake_bybit_refuses_more_warm_days_than_it_may_keep(args, says) -> None:
    out = methtrader("fake-bybit", "--port", "0", *args, check=False, timeout=30)
    assert out.returncode == 2 and says in out.stderr, out.stderr


# -- the lake ------------------------------------------------------------------------------

def test_a_damaged_parquet_day_is_moved_aside_and_fetched_again(tmp_path: Path) -> None:
    state = tmp_path / "s"
    state.mkdir()
    noon = time.time() // 86_400 * 86_400 - 43_200  # both backfills ask for the same range
    (state / "clock.json").write_text(json.dumps({"market_time": noon}))
    first = json.loads(methtrader("backfill", "BTCUSDT", "--days", "2", "--json",
                                  "--state-dir", str(state)).stdout)[0]
    days = sorted((state / "lake/candles/interval=1m/symbol=BTCUSDT").glob("day=*.parquet"))
    victim = days[0]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 3])  # a torn write
    out = methtrader("backfill", "BTCUSDT", "--days", "2", "--json", "--state-dir", str(state))
    again = json.loads(out.stdout)[0]
    assert again["days_written"] >= 1 and again["rows"] == first["rows"]
    assert pq.read_table(victim).num_rows > 0  # readable again, refetched
    moved = list((state / "lake" / "quarantine").rglob(f"{victim.name}.corrupt-*"))
    assert len(moved) == 1
    logged = [json.loads(line) for line in out.stderr.splitlines() if line.startswith("{")]
    assert any(e["msg"].startswith("damaged lake file moved aside") and e["service"] == "lake"
               for e in logged)


# -- a full disk at shutdown ---------------------------------------------------------------

def test_a_full_disk_at_shutdown_still_closes_the_store_and_the_bus(state: Path) -> None:
    """The clock's temp file points at /dev/full, whose writes fail with ENOSPC as a full
    disk's do: the later shutdown steps must still run and close DuckDB and the bus."""
    (state / "clock.tmp").symlink_to("/dev/full")
    out = run_briefly(state, check=False)
    line = one_error_line(out, 1)
    assert "save the virtual clock" in line and "No space left on device" in line
    assert not (state / "methtrader.duckdb.wal").exists()  # checkpointed and closed
    con = duckdb.connect(str(state / "methtrader.duckdb"), read_only=True)
    stops = con.execute("SELECT count(*) FROM audit_log WHERE action = 'run:stop'").fetchone()
    con.close()
    assert stops[0] == 2  # this run's stop was journalled and copied despite the failure
    st = status_json(state)
    assert st["running"] is False and st["services"]
    assert all(s["state"] in ("stopped", "failed") for s in st["services"].values())
    assert stat.S_ISLNK((state / "clock.tmp").lstat().st_mode)
