"""The scale-out keys: ``jobs.backend``, ``jobs.redis_url``, ``jobs.artifact_root`` and
``automl.storage``: what is refused (and how the message says so, never quoting a password),
what the printed config shows, and what a queue whose Redis is away does."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from appliance.config import ConfigError, build_config, config_as_toml
from appliance.jobs import Jobs, JobsUnavailable
from tests.conftest import free_port


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "methtrader.toml"
    p.write_text(text)
    return p


def test_sqlite_and_file_are_the_default_and_need_no_redis():
    cfg = build_config(env={})
    assert (cfg.jobs.backend, cfg.jobs.redis_url, cfg.automl.storage) == ("sqlite", "", "file")
    assert cfg.artifact_path == cfg.state_path


def test_a_redis_queue_from_the_file_with_a_shared_artifact_root(tmp_path):
    path = write(tmp_path, "[jobs]\nbackend = 'redis'\nredis_url = 'redis://10.0.0.5:6379/2'\n"
                           "artifact_root = '/mnt/methtrader'\n[automl]\nstorage = 'redis'\n")
    cfg = build_config(path, env={})
    assert (cfg.jobs.backend, cfg.automl.storage) == ("redis", "redis")
    assert cfg.artifact_path == Path("/mnt/methtrader")


def test_an_artifact_root_without_a_redis_queue_is_refused(tmp_path):
    """On one box a run written outside the state dir would never be registered."""
    with pytest.raises(ConfigError, match=r"'jobs.artifact_root'.*needs jobs.backend"):
        build_config(env={}, overrides={"jobs": {"artifact_root": str(tmp_path / "shared")}})
    same = build_config(env={}, overrides={"general": {"state_dir": str(tmp_path)},
                                           "jobs": {"artifact_root": str(tmp_path)}})
    assert same.artifact_path == same.state_path  # naming the state dir itself is fine


def test_redis_without_a_url_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match=r"needs 'jobs.redis_url'.*METHTRADER__JOBS__REDIS_URL"):
        build_config(env={}, overrides={"jobs": {"backend": "redis"}})
    with pytest.raises(ConfigError, match=r"needs 'jobs.redis_url'"):
        build_config(env={}, overrides={"jobs": {"backend": "redis"},
                                        "automl": {"storage": "redis"}})


def test_a_study_on_redis_needs_the_redis_queue_its_trials_run_on():
    with pytest.raises(ConfigError, match=r"automl.storage = \"redis\".*jobs.backend"):
        build_config(env={}, overrides={"jobs": {"redis_url": "redis://127.0.0.1:6379/0"},
                                        "automl": {"storage": "redis"}})


@pytest.mark.parametrize("url,why", [
    ("http://10.0.0.5:6379", "scheme 'http' is not one of redis://"),
    ("redis://", "has no host"),
    ("redis://:hunter2@host:99999/0", "port is not a number"),
    ("redis://:hunter2@host:6379/zero", "database 'zero' is not a number"),
    ("redis://host :6379", "white space"),
    ("unix://relative.sock", "absolute socket path"),
])
def test_a_bad_url_is_refused_with_the_reason_and_no_password(url, why, tmp_path):
    path = write(tmp_path, f"[jobs]\nbackend = 'redis'\nredis_url = '{url}'\n")
    with pytest.raises(ConfigError) as err:
        build_config(path, env={})
    assert "'jobs.redis_url'" in str(err.value) and why in str(err.value)
    assert "hunter2" not in str(err.value)


def test_a_url_from_the_environment_is_accepted_and_its_password_never_printed():
    env = {"METHTRADER__JOBS__BACKEND": "redis",
           "METHTRADER__JOBS__REDIS_URL": "redis://worker:hunter2@10.0.0.5:6379/0"}
    cfg = build_config(env=env)
    assert cfg.jobs.redis_url == "redis://worker:hunter2@10.0.0.5:6379/0"  # used as given
    shown = config_as_toml(cfg)
    assert 'redis_url = "redis://worker:****@10.0.0.5:6379/0"' in shown
    assert "hunter2" not in shown and "hunter2" not in str(cfg.to_dict())
    assert build_config(env={"METHTRADER__JOBS__BACKEND": "redis",
                             "METHTRADER__JOBS__REDIS_URL": "unix:///run/redis.sock"})


def test_without_the_redis_extra_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "redis", None)  # `import redis` fails as if absent
    with pytest.raises(ConfigError, match=r"redis client library is not installed.*\.\[redis\]"):
        build_config(env={}, overrides={"jobs": {"backend": "redis",
                                                 "redis_url": "redis://127.0.0.1:6379/0"}})


def test_a_queue_whose_redis_is_away_raises_what_where_and_what_to_do(tmp_path):
    pytest.importorskip("redis")
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"  # nothing listens there
    jobs = Jobs(tmp_path, redis_url=url)
    with pytest.raises(JobsUnavailable) as err:
        jobs.enqueue("selftest", 0, "m")
    message = str(err.value)
    assert "cannot queue job selftest" in message and "127.0.0.1" in message
    assert "start it or fix jobs.redis_url" in message and "hunter2" not in message
