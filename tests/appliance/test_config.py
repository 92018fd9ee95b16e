import os
import re
from pathlib import Path

import pytest

from appliance.config import ConfigError, build_config, config_as_toml, read_secret_file


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "methtrader.toml"
    p.write_text(text)
    return p


def test_defaults_work_with_no_file_and_no_env():
    cfg = build_config(env={})
    assert cfg.general.exchange == "sim"
    assert cfg.general.speed == 60.0
    assert cfg.general.metrics_port == 9108
    assert str(cfg.state_path).endswith(".local/state/methtrader")


def test_precedence_toml_then_env_then_flags(tmp_path):
    path = write(tmp_path, "[general]\nspeed = 10\nmetrics_port = 9200\nstate_dir = '/a'\n")
    cfg = build_config(path, env={"METHTRADER_SPEED": "20", "METHTRADER_STATE_DIR": "/b"},
                       overrides={"general": {"speed": 30.0, "state_dir": None}})
    assert cfg.general.metrics_port == 9200  # toml
    assert cfg.general.state_dir == "/b"  # env beats toml; a None flag changes nothing
    assert cfg.general.speed == 30.0  # flag beats env


def test_generic_env_variable_sets_any_key():
    cfg = build_config(env={"METHTRADER__SUPERVISOR__MAX_CRASHES": "9"})
    assert cfg.supervisor.max_crashes == 9


def test_config_is_frozen():
    cfg = build_config(env={})
    with pytest.raises(Exception):
        cfg.general.speed = 5  # type: ignore[misc]


@pytest.mark.parametrize("text, expected", [
    ("[general]\nspede = 3\n", "unknown key 'general.spede'"),
    ("[genral]\nspeed = 3\n", "unknown section 'genral'"),
    ("[general]\nspeed = 'fast'\n", "'general.speed'"),
    ("[general]\nmetrics_port = 70000\n", "out of range"),
    ("[general]\nexchange = 'binance'\n", "not one of sim, replay, bybit"),
    ("[supervisor]\nmax_crashes = 2.5\n", "expected an integer"),
    ("[shadow]\ntrials_lookback_days = 0.5\n", "'shadow.trials_lookback_days'.*out of range"),
    ("[shadow]\npsr_threshold = 1.5\n", "'shadow.psr_threshold'.*out of range"),
    ("[general\nspeed = 3\n", "not valid TOML"),
    ("[distill]\ntemperature = 0\n", "'distill.temperature'.*out of range"),
    ("[distill]\nweight = -1\n", "'distill.weight'.*out of range"),
    ("[distill]\nweekly_at = 'Sunday 12:00'\n", "'distill.weekly_at'.*expected form"),
    ("[training]\ndevice = 'tpu'\n", "'training.device'.*not one of auto, cpu, cuda"),
])
def test_bad_input_names_the_key(tmp_path, text, expected):
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace("'", "'")):
        build_config(write(tmp_path, text), env={})


def test_the_dsr_guard_keeps_its_old_key_and_counts_trials_over_a_window(tmp_path):
    cfg = build_config(env={})
    assert (cfg.shadow.psr_threshold, cfg.shadow.trials_lookback_days) == (0.95, 90.0)
    cfg = build_config(write(tmp_path, "[shadow]\npsr_threshold = 0\n"
                                       "trials_lookback_days = 30\n"), env={})
    assert (cfg.shadow.psr_threshold, cfg.shadow.trials_lookback_days) == (0.0, 30.0)


def test_error_gives_the_line(tmp_path):
    path = write(tmp_path, "# comment\n[general]\nspeed = 2\n\n[feed]\nwarmup_minutes = -5\n")
    with pytest.raises(ConfigError) as err:
        build_config(path, env={})
    assert "'feed.warmup_minutes'" in str(err.value) and "line 6" in str(err.value)


def test_unreadable_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        build_config(tmp_path / "missing.toml", env={})


def test_bad_env_value_is_an_error():
    with pytest.raises(ConfigError, match="environment"):
        build_config(env={"METHTRADER_SPEED": "-1"})


def test_effective_config_round_trips_as_toml(tmp_path):
    cfg = build_config(env={"METHTRADER_SPEED": "42"})
    again = build_config(write(tmp_path, config_as_toml(cfg)), env={})
    assert again == cfg


def test_secret_file_must_be_private(tmp_path):
    p = tmp_path / "key"
    p.write_text("s3cret\n")
    os.chmod(p, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        read_secret_file(p)
    os.chmod(p, 0o600)
    assert read_secret_file(p) == "s3cret"


def test_api_keys_come_from_the_environment_and_never_show(tmp_path):
    cfg = build_config(env={"BYBIT_API_KEY": "AKEY123", "BYBIT_API_SECRET": "SSECRET456"})
    assert cfg.bybit.api_key == "AKEY123" and cfg.bybit.api_secret == "SSECRET456"
    shown = repr(cfg) + str(cfg.to_dict()) + config_as_toml(cfg)
    assert "AKEY123" not in shown and "SSECRET456" not in shown and "****" in shown


def test_api_keys_in_a_config_file_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="is a secret"):
        build_config(write(tmp_path, "[bybit]\napi_secret = 'oops'\n"), env={})


def test_api_keys_from_a_private_key_file(tmp_path):
    keys = tmp_path / "bybit.keys"
    keys.write_text("KFILE\nSFILE\n")
    keys.chmod(0o640)
    path = write(tmp_path, f"[bybit]\nkey_file = '{keys}'\n")
    with pytest.raises(ConfigError, match="chmod 600"):
        build_config(path, env={})
    keys.chmod(0o600)
    cfg = build_config(path, env={})
    assert (cfg.bybit.api_key, cfg.bybit.api_secret) == ("KFILE", "SFILE")


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
def test_non_finite_numbers_are_refused_from_every_source(tmp_path, value):
    """Issue 11 #7: nan passes every range check (nan < lo is False), so refuse it by name."""
    toml = tmp_path / "c.toml"
    toml.write_text(f"[trading]\nmax_daily_loss = {value.lower()}\n")
    with pytest.raises(ConfigError, match=r"'trading.max_daily_loss'.*line 2.*finite"):
        build_config(toml, env={})
    with pytest.raises(ConfigError, match="'trading.max_daily_loss'.*finite"):
        build_config(env={"METHTRADER__TRADING__MAX_DAILY_LOSS": value})
    with pytest.raises(ConfigError, match="'general.speed'.*finite"):
        build_config(env={}, overrides={"general": {"speed": float(value)}})


def test_a_config_file_is_read_bounded_and_must_be_utf8(tmp_path):
    big = tmp_path / "big.toml"
    big.write_bytes(b"# " + b"x" * (2 << 20) + b"\n")
    with pytest.raises(ConfigError, match="larger than"):
        build_config(big, env={})
    latin = tmp_path / "latin.toml"
    latin.write_bytes('[replay]\nstart = "2022-12-13 \xe9t\xe9"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        build_config(latin, env={})


@pytest.mark.parametrize("url", ["not a url", "ftp://hooks.example/x", "http://", "http://a b/c"])
def test_an_invalid_webhook_url_is_a_config_error_that_hides_the_url(url):
    with pytest.raises(ConfigError, match="METHTRADER_WEBHOOK_URL") as info:
        build_config(env={"METHTRADER_WEBHOOK_URL": url})
    assert url not in str(info.value)
    good = build_config(env={"METHTRADER_WEBHOOK_URL": "https://hooks.example.com/T/B/x"})
    assert good.notify.webhook_url.endswith("/x")


def test_the_drift_section_has_its_defaults_and_checks_its_ranges():
    cfg = build_config(env={}, overrides={})
    assert (cfg.drift.window, cfg.drift.interval, cfg.drift.history, cfg.drift.min_history,
            cfg.drift.cooldown, cfg.drift.sigma, cfg.drift.sigma_floor, cfg.drift.persist
            ) == ("3d", "1h", "14d", 48, "24h", 3.0, 0.4, 6)
    for key, bad in (("window", "3 days"), ("min_history", 1), ("sigma", 0.0),
                     ("cooldown", "soon"), ("sigma_floor", -0.1), ("persist", 0)):
        with pytest.raises(ConfigError, match=f"drift.{key}|{key}"):
            build_config(env={}, overrides={"drift": {key: bad}})


def private_keys(tmp_path: Path, content: bytes) -> Path:
    keys = tmp_path / "bybit.keys"
    keys.write_bytes(content)
    keys.chmod(0o600)
    return keys


def with_key_file(tmp_path: Path, keys: Path) -> Path:
    return write(tmp_path, f"[bybit]\nkey_file = '{keys}'\n")


def test_a_key_file_that_is_not_utf8_or_too_large_is_refused_in_one_line(tmp_path):
    keys = private_keys(tmp_path, b"\xff\xfeK\nS\n")
    with pytest.raises(ConfigError, match=r"'bybit.key_file'.*not UTF-8.*byte 0") as info:
        build_config(with_key_file(tmp_path, keys), env={})
    assert "\n" not in str(info.value)
    keys = private_keys(tmp_path, b"K\nS\n" + b"x" * (2 << 20))
    with pytest.raises(ConfigError, match=r"'bybit.key_file'.*larger than"):
        build_config(with_key_file(tmp_path, keys), env={})


@pytest.mark.timeout(10, method="signal")
def test_a_key_file_that_is_not_a_regular_file_is_refused_before_it_is_opened(tmp_path):
    fifo = tmp_path / "bybit.fifo"
    os.mkfifo(fifo, 0o600)
    link = tmp_path / "link.keys"
    link.symlink_to(fifo)
    for keys in (fifo, link):
        with pytest.raises(ConfigError, match=r"'bybit.key_file'.*is a FIFO, not a regular file"):
            build_config(with_key_file(tmp_path, keys), env={})
    with pytest.raises(ConfigError, match="is a directory, not a regular file"):
        build_config(with_key_file(tmp_path, tmp_path), env={})
    good = private_keys(tmp_path, b"KFILE\nSFILE\n")
    link.unlink()
    link.symlink_to(good)  # a link to a private file is followed, as before
    cfg = build_config(with_key_file(tmp_path, link), env={})
    assert (cfg.bybit.api_key, cfg.bybit.api_secret) == ("KFILE", "SFILE")


@pytest.mark.parametrize("content, missing", [
    (b"k e y\n\nsecret\n", "line 2 (the API secret)"),
    (b"KEY\n   \n", "line 2 (the API secret)"),
    (b"KEY\n", "line 2 (the API secret)"),
    (b"\n\n", "line 1 (the API key)"),
])
def test_a_key_file_needs_the_key_and_the_secret_on_its_first_two_lines(tmp_path, content,
                                                                         missing):
    keys = private_keys(tmp_path, content)
    with pytest.raises(ConfigError, match=rf"'bybit.key_file'.*{re.escape(missing)}"):
        build_config(with_key_file(tmp_path, keys), env={})


@pytest.mark.parametrize("content", [b"KFILE  \nSFILE  \n", b"KFILE\r\nSFILE\r\n",
                                     b"KFILE\nSFILE\n\n\n", b"KFILE\nSFILE"])
def test_the_accepted_key_file_forms_still_load(tmp_path, content):
    cfg = build_config(with_key_file(tmp_path, private_keys(tmp_path, content)), env={})
    assert (cfg.bybit.api_key, cfg.bybit.api_secret) == ("KFILE", "SFILE")


@pytest.mark.parametrize("value", ["", "   "])
def test_an_empty_state_dir_is_refused_from_every_source(tmp_path, value):
    toml = write(tmp_path, f"[general]\nstate_dir = '{value}'\n")
    with pytest.raises(ConfigError, match=r"'general.state_dir' \(.*line 2\): empty"):
        build_config(toml, env={})
    with pytest.raises(ConfigError, match=r"'general.state_dir' \(environment variable "
                                          r"METHTRADER_STATE_DIR\): empty"):
        build_config(env={"METHTRADER_STATE_DIR": value})
    with pytest.raises(ConfigError, match=r"'general.state_dir' \(command line\): empty"):
        build_config(env={}, overrides={"general": {"state_dir": value}})


def test_two_environment_variables_for_one_key_must_agree():
    env = {"METHTRADER_SPEED": "20", "METHTRADER__GENERAL__SPEED": "30"}
    with pytest.raises(ConfigError, match=r"METHTRADER_SPEED and METHTRADER__GENERAL__SPEED "
                                          r"both set 'general.speed'"):
        build_config(env=env)
    with pytest.raises(ConfigError, match=r"METHTRADER__GENERAL__SPEED and METHTRADER_SPEED"):
        build_config(env=dict(reversed(env.items())))
    agreed = build_config(env={"METHTRADER_SPEED": "20", "METHTRADER__GENERAL__SPEED": "20.0"})
    assert agreed.general.speed == 20.0


@pytest.mark.parametrize("text, expected", [
    ("[risk]\nfreeze_drawdown = 0.01\nunfreeze_drawdown = 0.5\n",
     r"'risk.unfreeze_drawdown' \(0.5\) is above 'risk.freeze_drawdown' \(0.01\)"),
    ("[supervisor]\nbackoff_initial_s = 10\nbackoff_max_s = 1\n",
     r"'supervisor.backoff_initial_s' \(10.0\) is above 'supervisor.backoff_max_s' \(1.0\)"),
])
def test_inconsistent_pairs_of_keys_are_refused(tmp_path, text, expected):
    with pytest.raises(ConfigError, match=expected):
        build_config(write(tmp_path, text), env={})


def test_equal_pairs_of_keys_are_allowed(tmp_path):
    cfg = build_config(write(tmp_path, "[risk]\nfreeze_drawdown = 0.05\nunfreeze_drawdown = 0.05\n"
                                       "[supervisor]\nbackoff_initial_s = 2\nbackoff_max_s = 2\n"),
                       env={})
    assert (cfg.risk.unfreeze_drawdown, cfg.supervisor.backoff_initial_s) == (0.05, 2.0)


@pytest.mark.parametrize("name, reads_from", [
    ("METHTRADER__BYBIT__API_KEY", "BYBIT_API_KEY"),
    ("METHTRADER__BYBIT__API_SECRET", "BYBIT_API_SECRET"),
    ("METHTRADER__NOTIFY__WEBHOOK_URL", "METHTRADER_WEBHOOK_URL"),
])
def test_a_secret_in_a_generic_variable_names_the_variable_it_is_read_from(name, reads_from):
    with pytest.raises(ConfigError) as info:
        build_config(env={name: "x"})
    message = str(info.value)
    assert f"environment variable {name}" in message and f"only from {reads_from}" in message
    assert "(environment)" not in message


def test_the_printed_config_says_where_each_secret_comes_from():
    shown = config_as_toml(build_config(env={}))
    assert "# webhook_url = not set, from METHTRADER_WEBHOOK_URL only" in shown
    assert "# api_key = not set, from BYBIT_API_KEY or bybit.key_file only" in shown


@pytest.mark.parametrize("env, given, lacking", [
    ({"BYBIT_API_KEY": "k3y-v4lue"}, "BYBIT_API_KEY", "BYBIT_API_SECRET"),
    ({"BYBIT_API_SECRET": "s3cr3t-v4lue"}, "BYBIT_API_SECRET", "BYBIT_API_KEY"),
])
def test_half_an_api_key_pair_in_the_environment_is_refused(tmp_path, env, given, lacking):
    key_file = tmp_path / "keys"
    key_file.write_text("KEY\nSECRET\n")
    key_file.chmod(0o600)
    toml = tmp_path / "m.toml"
    toml.write_text(f'[bybit]\nkey_file = "{key_file}"\n')
    for path in (None, toml):  # alone, and beside a key file it would have hidden
        with pytest.raises(ConfigError) as raised:
            build_config(path, env=env)
        assert f"{given} is set but {lacking} is not" in str(raised.value)
        assert "v4lue" not in str(raised.value)  # the value itself is never shown
    both = build_config(toml, env={"BYBIT_API_KEY": "k", "BYBIT_API_SECRET": "s"})
    assert (both.bybit.api_key, both.bybit.api_secret) == ("k", "s")


def test_api_keys_in_the_environment_are_stripped_and_blank_ones_are_unset(tmp_path):
    key_file = tmp_path / "keys"
    key_file.write_text("FILEKEY\nFILESECRET\n")
    key_file.chmod(0o600)
    toml = tmp_path / "m.toml"
    toml.write_text(f'[bybit]\nkey_file = "{key_file}"\n')
    blank = build_config(toml, env={"BYBIT_API_KEY": " ", "BYBIT_API_SECRET": "\t"})
    assert (blank.bybit.api_key, blank.bybit.api_secret) == ("FILEKEY", "FILESECRET")
    padded = build_config(None, env={"BYBIT_API_KEY": " k ", "BYBIT_API_SECRET": "sec\r\n"})
    assert (padded.bybit.api_key, padded.bybit.api_secret) == ("k", "sec")
