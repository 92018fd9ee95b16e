"""The GPUs of this machine as ``nvidia-smi`` reports them: name, utilisation, memory.

Asked of ``nvidia-smi`` (not NVML through torch) so that the appliance and the TUI never load
torch; no ``nvidia-smi`` on the PATH, or one that fails, means no GPU: an empty list, and the
Training screen then shows nothing GPU-related.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

QUERY = "index,name,utilization.gpu,memory.used,memory.total"


def parse_smi(text: str) -> list[dict[str, Any]]:
    """Rows of ``nvidia-smi --query-gpu=QUERY --format=csv,noheader,nounits``; lines that do
    not parse are skipped ("[N/A]" fields read as None)."""
    out = []
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 5:
            continue

        def number(value: str) -> float | None:
            try:
                return float(value)
            except ValueError:
                return None

        index = number(parts[0])
        if index is None:
            continue
        out.append({"index": int(index), "name": parts[1], "util_pct": number(parts[2]),
                    "mem_used_mib": number(parts[3]), "mem_total_mib": number(parts[4])})
    return out


def gpu_stats(timeout_s: float = 3.0) -> list[dict[str, Any]]:
    """The GPUs' current figures; [] when there is no GPU (or nvidia-smi cannot tell)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run([exe, f"--query-gpu={QUERY}", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return parse_smi(out.stdout) if out.returncode == 0 else []


def gpu_line(gpu: dict[str, Any]) -> str:
    """"GPU 0 NVIDIA H200: 35% busy · memory 1.0 / 140.4 GiB"."""
    def gib(mib: float | None) -> str:
        return "—" if mib is None else f"{mib / 1024:.1f}"

    util = gpu.get("util_pct")
    return (f"GPU {gpu['index']} {gpu['name']}: "
            f"{'—' if util is None else f'{util:.0f}%'} busy · memory "
            f"{gib(gpu.get('mem_used_mib'))} / {gib(gpu.get('mem_total_mib'))} GiB")
