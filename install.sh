#!/usr/bin/env bash
# Install methtrader into ./.venv.
#   ./install.sh            the appliance (onnxruntime, or onnxruntime-gpu when nvidia-smi sees a GPU)
#   ./install.sh --dev      also the test tools (pytest, hypothesis, tmux for the terminal test,
#                           promtool for the Prometheus rule tests, the redis extra and
#                           redis-server for the scale-out tests)
#   ./install.sh --systemd  also write a systemd unit for `methtrader run` (installing it is yours)
# Running it again with the same options changes nothing.
set -euo pipefail
cd "$(dirname "$0")"

dev=0 systemd=0
for arg in "$@"; do
  case "$arg" in
    --dev) dev=1 ;;
    --systemd) systemd=1 ;;
    -h|--help) sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown option '$arg' (use --dev, --systemd or --help)" >&2; exit 2 ;;
  esac
done

# 1. a Python that is new enough
python="${PYTHON:-}"
if [ -z "$python" ]; then
  for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      python="$candidate"; break
    fi
  done
fi
if [ -z "$python" ] || ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  found=$( (command -v python3 >/dev/null && python3 -V) 2>&1 || echo "no python3")
  echo "install.sh: methtrader needs Python 3.11 or newer (found: $found)." >&2
  echo "            Install python3.11 (e.g. apt-get install python3.11 python3.11-venv) or set PYTHON=/path/to/python3.11." >&2
  exit 1
fi

# 2. exactly one ONNX Runtime: the GPU build when a GPU is visible
runtime=cpu
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q GPU; then
  runtime=gpu
fi
extras="$runtime"
[ "$dev" = 1 ] && extras="$extras,dev,redis"

[ -x .venv/bin/python ] || "$python" -m venv .venv
stamp=".venv/.methtrader-install"
want="$(cat pyproject.toml | sha256sum | cut -d' ' -f1) $extras"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "methtrader: already installed ($extras); nothing to do."
else
  other=$([ "$runtime" = gpu ] && echo onnxruntime || echo onnxruntime-gpu)
  if .venv/bin/python -m pip show "$other" >/dev/null 2>&1; then
    .venv/bin/python -m pip uninstall -y -q "$other"
  fi
  .venv/bin/python -m pip install -q -e ".[$extras]"
  echo "$want" > "$stamp"
  echo "methtrader: installed into .venv ($extras)."
fi

# 3. tmux for the terminal test of the dashboard (dev only; best effort)
if [ "$dev" = 1 ] && ! command -v tmux >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get install -y -q tmux >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q tmux >/dev/null 2>&1)) \
      && echo "methtrader: installed tmux (for the terminal test)." \
      || echo "methtrader: could not install tmux; the tmux test will be skipped."
  else
    echo "methtrader: tmux not found; install it to run the terminal test (it is skipped otherwise)."
  fi
fi

# 3b. promtool for the Prometheus rule tests (dev only; best effort; Debian's prometheus package)
if [ "$dev" = 1 ] && ! command -v promtool >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1)) \
      && echo "methtrader: installed promtool (for the Prometheus rule tests)." \
      || echo "methtrader: could not install promtool; the rule tests will be skipped."
  else
    echo "methtrader: promtool not found; apt-get install prometheus to run the rule tests (they are skipped otherwise)."
  fi
fi

# 3c. redis-server for the scale-out tests (dev only; best effort; Debian's redis-server package)
if [ "$dev" = 1 ] && ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get install -y -q --no-install-recommends redis-server >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends redis-server >/dev/null 2>&1)) \
      && echo "methtrader: installed redis-server (for the scale-out tests; they start their own on a loopback port)." \
      || echo "methtrader: could not install redis-server; the scale-out tests will be skipped."
  elif command -v apt-get >/dev/null 2>&1; then
    echo "methtrader: redis-server not found; run: sudo apt-get install redis-server (the scale-out tests are skipped otherwise)."
  else
    echo "methtrader: redis-server not found and apt-get is not available here; install Redis 7 from your system's packages to run the scale-out tests (they are skipped otherwise)."
  fi
fi

# 4. the systemd unit
if [ "$systemd" = 1 ]; then
  unit="$PWD/methtrader.service"
  cat > "$unit" <<UNIT
[Unit]
Description=methtrader trading appliance
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
User=$(id -un)
WorkingDirectory=$PWD
ExecStart=$PWD/.venv/bin/methtrader run
KillSignal=SIGTERM
TimeoutStopSec=15
Restart=on-failure
RestartSec=5

[Install]
WantedBy=multi-user.target
UNIT
  if command -v systemd-analyze >/dev/null 2>&1; then
    systemd-analyze verify "$unit" && echo "methtrader: $unit verified by systemd-analyze."
  fi
  echo "methtrader: wrote $unit; install it with: sudo cp $unit /etc/systemd/system/ && sudo systemctl enable --now methtrader"
fi

if [ "$dev" = 1 ]; then
  echo "Next: .venv/bin/python -m pytest"
else
  echo "Next: .venv/bin/methtrader run    (the simulated market; Ctrl-C stops it)"
fi
