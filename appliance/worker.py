"""``methtrader worker``: a job consumer on another machine, sharing the appliance's Redis queue.

It consumes the same huey queue as the appliance's own consumer (``jobs.backend = "redis"``)
and runs the same jobs (training runs, AutoML trials and selections, feature builds) in the
folder ``--artifact-root``: a mount shared with the appliance (``jobs.artifact_root`` there),
where it reads the Parquet lake (``<root>/lake``) and writes run artifacts
(``<root>/artifacts/<run_id>/``, paths in receipts relative to the root). It never touches the
appliance's DuckDB file or bus; it reports through huey's result store
(:mod:`appliance.job_reports`). AutoML studies with ``automl.storage = "redis"`` are shared
through Optuna's journal on the same Redis.

SIGINT (Ctrl-C) stops it gracefully: running jobs finish first. While a job runs, its note in
Redis is renewed every 10 s (:mod:`appliance.remote_jobs`); a worker stopped harder (SIGKILL, a
machine lost) leaves a note that goes stale, and ``run`` puts the job back on the queue a minute
later, as it does for its own consumer's dead workers.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path

from appliance.config import ConfigError
from appliance.logs import stderr_handler
from appliance.redis_support import QueueOutageFilter, mask_url

PING_TIMEOUT_S = 5.0
log = logging.getLogger("methtrader.worker")


def check_redis(url: str, timeout_s: float = PING_TIMEOUT_S) -> None:
    """Raise ConnectionError (what, where, what to do) unless Redis at ``url`` answers."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s,
                                  socket_timeout=timeout_s)
    try:
        client.ping()
    except (redis.RedisError, socket.error) as exc:
        raise ConnectionError(f"cannot reach Redis at {mask_url(url)} ({exc}); is redis-server "
                              "running and reachable from this machine (bind, firewall)?"
                              ) from None
    finally:
        client.close()


def check_root(root: Path) -> None:
    """The artifact root must be a folder holding the appliance's lake."""
    if not root.is_dir():
        raise ConfigError(f"--artifact-root {root}: not a folder; mount the appliance's "
                          "jobs.artifact_root (its state dir by default) there")
    if not (root / "lake").is_dir():
        raise ConfigError(f"--artifact-root {root}: no lake/ in it; it must be the mount of the "
                          "appliance's jobs.artifact_root, which holds lake/ and artifacts/")


def run_worker(redis_url: str, root: Path, workers: int, log_format: str) -> int:
    """Check Redis and the root, then consume the queue until SIGINT."""
    from appliance.consumer_process import run_consumer
    from appliance.jobs import Jobs

    handler = stderr_handler(log_format, "worker")
    handler.addFilter(QueueOutageFilter())
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    check_root(root)
    check_redis(redis_url)
    jobs = Jobs(root, redis_url=redis_url, root=root, remote=True)
    log.info("worker consuming %s with %d worker process(es) in %s", mask_url(redis_url),
             workers, root)
    run_consumer(jobs, workers)
    return 0
