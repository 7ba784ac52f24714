"""Run a command whose output folder is a small tmpfs that is already full: a real ENOSPC.

``python -m tests.io.fullfs --mount DIR --size BYTES [--copy FILE ...] -- CMD ...`` moves itself
into a private mount namespace (``unshare(CLONE_NEWNS)``, root), mounts a tmpfs of BYTES at DIR
(seen by no other process, gone when this one exits), copies each FILE into it (a previous
version the command must leave intact), fills the rest with a filler file until the kernel says
ENOSPC, runs CMD, and prints one JSON object: CMD's exit code and stderr, and DIR's listing
(name → SHA-256) before and after. ``--probe`` only checks that the mount can be made.
Linux only; done with ``ctypes`` so neither util-linux's ``unshare`` nor ``mount`` is needed.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

CLONE_NEWNS = 0x00020000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
FILLER = ".filler"


def private_tmpfs(mountpoint: Path, size: int) -> None:
    """Mount a ``size``-byte tmpfs at ``mountpoint`` in a new, private mount namespace."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    if libc.unshare(CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), f"unshare(CLONE_NEWNS): {os.strerror(ctypes.get_errno())}")
    # Without this, the tmpfs would propagate to the parent's namespace through shared mounts.
    if libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        raise OSError(ctypes.get_errno(), f"making / private: {os.strerror(ctypes.get_errno())}")
    mountpoint.mkdir(parents=True, exist_ok=True)
    if libc.mount(b"tmpfs", str(mountpoint).encode(), b"tmpfs", 0, f"size={size}".encode()) != 0:
        raise OSError(ctypes.get_errno(), f"mount tmpfs: {os.strerror(ctypes.get_errno())}")


def fill(folder: Path) -> int:
    """Write a filler file until the filesystem is full; returns its size."""
    written = 0
    block = b"\0" * 4096
    with open(folder / FILLER, "wb", buffering=0) as f:
        while True:
            try:
                written += f.write(block)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                return written


def listing(folder: Path) -> dict[str, str]:
    """Every file and folder below ``folder`` (the filler excluded): path → SHA-256 (folders: "dir")."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if rel == FILLER:
            continue
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mount", type=Path, required=True)
    ap.add_argument("--size", type=int, default=64 * 1024)
    ap.add_argument("--copy", type=Path, action="append", default=[])
    ap.add_argument("--probe", action="store_true")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    try:
        private_tmpfs(args.mount, args.size)
    except OSError as e:
        print(json.dumps({"error": str(e)}))
        return 3
    if args.probe:
        print(json.dumps({"ok": True}))
        return 0
    for src in args.copy:
        shutil.copy2(src, args.mount / src.name)
    filler = fill(args.mount)
    before = listing(args.mount)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    print(json.dumps({"rc": proc.returncode, "stderr": proc.stderr, "before": before, "after": listing(args.mount),
                      "filler": filler}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
