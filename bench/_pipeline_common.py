"""Shared by the pipeline benchmarks: run in a loopback-only namespace, print a table, write JSON."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def isolate_or_reexec() -> None:
    """Ray may only talk to loopback here: re-run this script inside a loopback-only network
    namespace (root) unless it already is in one."""
    from flows.netns import can_isolate, enter_loopback_namespace, only_loopback

    if only_loopback():
        return
    if not can_isolate():
        sys.exit("this benchmark starts Ray: run it as root (it isolates itself) or inside `unshare -n`")
    enter_loopback_namespace()


def machine() -> dict[str, Any]:
    import torch

    return {
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_avg_1m": os.getloadavg()[0],
    }


def write_json(path: str | Path, payload: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")


def print_table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r))
    Console().print(t)
