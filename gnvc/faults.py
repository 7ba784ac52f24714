"""Fault points: where the fault tests stop a real process so they can SIGKILL it at an exact spot.

Why a hook at all: "kill a worker mid-shard" or "kill a training between the export's two
renames" cannot be hit reliably by polling from outside — the window is microseconds wide. A
fault point makes the window as wide as the test needs, without replacing anything: the process
that pauses is the real one, and the test kills it with a real ``SIGKILL``.

Off unless ``GNVC_FAULT_POINT`` is set (one dictionary lookup per call otherwise). With
``GNVC_FAULT_POINT=NAME`` (or ``NAME:KEY``) and ``GNVC_FAULT_DIR=DIR``:

- every pass through ``fault_point(NAME, key)`` (any key, or the given one) appends
  ``NAME<TAB>KEY<TAB>PID`` to ``DIR/hits.log`` — how a test counts attempts and their pids;
- the *first* matching pass (it creates ``DIR/paused`` exclusively, holding its pid) then waits
  until ``DIR/release`` appears or ``GNVC_FAULT_WAIT_S`` (default 600) seconds pass: the test
  kills it meanwhile. Later passes (the retry, the rerun) go on without pausing.

Points in the code: ``shard-tmp-written`` (a Parquet shard written to its temporary, not yet
renamed; key: the shard's file name), ``checkpoint-saved`` (key: the step), ``export-written``
(the export's temporary complete, nothing renamed yet) and ``export-swapped`` (the old export
moved aside, the new one not yet in place), both keyed by the step.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

ENV_POINT = "GNVC_FAULT_POINT"
ENV_DIR = "GNVC_FAULT_DIR"
ENV_WAIT = "GNVC_FAULT_WAIT_S"
HITS = "hits.log"
PAUSED = "paused"
RELEASE = "release"


def fault_point(name: str, key: object = "") -> None:
    """Record this pass and pause the first matching one (see the module docstring); else nothing."""
    spec = os.environ.get(ENV_POINT)
    if not spec:
        return
    want_name, _, want_key = spec.partition(":")
    if want_name != name or (want_key and want_key != str(key)):
        return
    folder = Path(os.environ.get(ENV_DIR) or ".")
    folder.mkdir(parents=True, exist_ok=True)
    line = f"{name}\t{key}\t{os.getpid()}\n".encode()
    fd = os.open(folder / HITS, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line)  # one small O_APPEND write: lines of concurrent processes never interleave
    finally:
        os.close(fd)
    try:
        fd = os.open(folder / PAUSED, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return  # an earlier pass paused already: this one (a retry) runs through
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    deadline = time.monotonic() + float(os.environ.get(ENV_WAIT, "600"))
    while not (folder / RELEASE).exists() and time.monotonic() < deadline:
        time.sleep(0.02)


def hits(folder: str | Path, name: str | None = None) -> list[tuple[str, str, int]]:
    """The passes recorded in ``folder/hits.log`` as (name, key, pid), oldest first."""
    path = Path(folder) / HITS
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        n, k, pid = line.split("\t")
        if name is None or n == name:
            out.append((n, k, int(pid)))
    return out


def wait_paused(folder: str | Path, timeout_s: float, alive: object = None) -> int:
    """The pid of the process paused at the fault point, once it is there (TimeoutError otherwise).

    ``alive``: an optional callable returning False when the process under test has ended (a
    ``subprocess.Popen.poll() is None`` check), so a run that finished without pausing fails fast.
    """
    path = Path(folder) / PAUSED
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.is_file() and (text := path.read_text()):
            return int(text)
        if callable(alive) and not alive():
            raise RuntimeError(f"the process ended without reaching the fault point ({folder})")
        time.sleep(0.02)
    raise TimeoutError(f"no process paused at the fault point within {timeout_s} s ({folder})")
