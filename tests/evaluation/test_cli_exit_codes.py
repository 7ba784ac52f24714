"""Exit status of ``gnvc`` (docs/cli.md): 2 for usage errors, refused before any model is loaded or
any frame read; 1 for runtime failures; 130 when interrupted; ``--quiet`` and terminal-only bars.

"Before" is proven with inputs that would fail later in a different way: the weights directory is
broken so that loading it fails (its VAE tensors are gone, which only the loader notices), and the
input video does not exist (which only opening it notices). An option error must win over both.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gnvc.cli import cli, main
from gnvc.io.video import Video, write_video
from gnvc.models.model_dir import GnvcModel

REPO = Path(__file__).resolve().parents[2]
VAE_WEIGHTS = "vae/diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "tiny"
    GnvcModel.from_profile("tiny", seed=0).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def broken(weights, tmp_path_factory) -> Path:
    """A directory whose JSON is intact but whose loading fails (the VAE's tensors are missing)."""
    path = Path(shutil.copytree(weights, tmp_path_factory.mktemp("broken") / "tiny"))
    (path / VAE_WEIGHTS).unlink()
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("clip") / "noise.y4m"
    write_video(path, Video(rng.integers(0, 256, (9, 48, 64, 3), dtype=np.uint8), 25))
    return path


def _run(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(list(args))
        raise SystemExit(0)
    out, err = capsys.readouterr()
    return e.value.code, out, err


def _gnvc(*args: str, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "gnvc", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300, **kwargs
    )


def test_the_broken_directory_really_fails_to_load(capsys, broken, clip, tmp_path):
    """The control: with valid options the same command reaches the loader and fails there."""
    code, _, err = _run(capsys, "encode", str(clip), "-o", str(tmp_path / "x.gnvc"), "--weights", str(broken))
    assert code == 2 and VAE_WEIGHTS in err and "missing" in err
    code, _, err = _run(
        capsys, "encode", str(tmp_path / "nope.y4m"), "-o", str(tmp_path / "x.gnvc"), "--weights", str(broken)
    )
    assert code == 2 and "nope.y4m" in err


@pytest.mark.parametrize(
    "args,message",
    [
        (("-q", "99"), "--quality must be in 0..5"),
        (("-q", "6"), "--quality must be in 0..5"),
        (("-q", "-1"), "quality must be ≥ 0"),
        (("--t-n", "1.0"), "t_N must be in (0, 1)"),
        (("--t-n", "0"), "t_N must be in (0, 1)"),
        (("--steps", "300"), "0..255"),
        (("--intra-period", "0"), "--intra-period"),
        (("--frames", "0"), "--frames must be ≥ 1"),
        (("--fps", "-5"), "--fps must be in"),
        (("--size", "64x"), "WIDTHxHEIGHT"),
        (("--size", "20000x16"), "at most 16384"),
        (("--device", "tpu"), "--device must be cpu, cuda or cuda:N"),
        (("--profile", "small"), "of profile 'tiny', not 'small'"),
        (("-q", "abc"), "'abc' is not a valid integer"),
        (("--no-such-option",), "No such option"),
    ],
)
def test_encode_options_are_refused_before_loading_or_reading(capsys, broken, tmp_path, args, message):
    out = tmp_path / "x.gnvc"
    code, _, err = _run(
        capsys, "encode", str(tmp_path / "missing.y4m"), "-o", str(out), "--weights", str(broken), *args
    )
    assert code == 2, err
    assert message in err, err
    assert VAE_WEIGHTS not in err and "missing.y4m" not in err and "Traceback" not in err
    assert not out.exists()


def test_encode_output_must_be_gnvc(capsys, broken, tmp_path):
    code, _, err = _run(
        capsys, "encode", str(tmp_path / "missing.y4m"), "-o", str(tmp_path / "x.mp4"), "--weights", str(broken)
    )
    assert code == 2 and "must be a .gnvc file" in err


@pytest.fixture(scope="module")
def stream(weights, clip, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("stream") / "a.gnvc"
    main(["encode", str(clip), "-o", str(out), "--weights", str(weights), "--quiet"])  # returns on success
    assert out.stat().st_size > 0
    return out


@pytest.mark.parametrize(
    "args,message",
    [
        (("-o", "{tmp}/out.xyz"), "unknown output type"),
        (("-o", "{tmp}/out.y4m", "--steps", "300"), "0..255"),
        (("-o", "{tmp}/out.y4m", "--start", "-1"), "--start must be ≥ 0"),
        (("-o", "{tmp}/out.y4m", "--start", "100"), "past the end"),
        (("-o", "{tmp}/out.y4m", "--frames", "0"), "--frames must be ≥ 1"),
    ],
)
def test_decode_options_are_refused_before_loading(capsys, broken, stream, tmp_path, args, message):
    args = tuple(a.format(tmp=tmp_path) for a in args)
    code, _, err = _run(capsys, "decode", str(stream), "--weights", str(broken), *args)
    assert code == 2, err
    assert message in err and VAE_WEIGHTS not in err
    assert not any(tmp_path.iterdir())


def test_raw_yuv_size_must_match_the_file_exactly(capsys, broken, tmp_path):
    raw = tmp_path / "clip.yuv"
    raw.write_bytes(bytes(32 * 32 * 3 // 2 * 3 + 1))  # 3 frames of 32x32 and one stray byte
    code, _, err = _run(
        capsys, "encode", str(raw), "-o", str(tmp_path / "x.gnvc"), "--size", "32x32", "--weights", str(broken)
    )
    assert code == 2 and "not a whole number of yuv420p frames" in err and VAE_WEIGHTS not in err


def test_a_tampered_index_is_a_usage_error_before_loading(capsys, weights, tmp_path, clip):
    bad = Path(shutil.copytree(weights, tmp_path / "w"))
    index = json.loads((bad / "model_index.json").read_text())
    index["profile"]["codec"]["num_qualities"] = "6"
    (bad / "model_index.json").write_text(json.dumps(index))
    code, _, err = _run(capsys, "encode", str(clip), "-o", str(tmp_path / "x.gnvc"), "--weights", str(bad))
    assert code == 2 and "model_index.json" in err and "num_qualities must be an integer" in err


def test_a_runtime_failure_exits_1(weights, clip, tmp_path):
    """A real write failure (a file-size limit: EFBIG, as a full disk gives ENOSPC) is the
    environment's fault, not the command line's: exit status 1, one line, no partial output."""

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG from write() instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (100, 100))  # the stream is ~360 bytes

    out = tmp_path / "x.gnvc"
    proc = _gnvc("encode", str(clip), "-o", str(out), "--weights", str(weights), "-q", "5", preexec_fn=limit)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().startswith("error:")
    assert "file size limit" in proc.stderr or "File too large" in proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()


def _sigint_as_on_a_terminal() -> None:
    """SIGINT at its default disposition in the child, as a terminal's Ctrl-C finds it: a test run
    started in the background by a non-interactive shell has SIGINT ignored, which children inherit
    (and then Python installs no KeyboardInterrupt handler)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_exits_130(weights, tmp_path):
    """SIGINT while encode waits for its input (a FIFO nobody writes to) gives 130 and no output."""
    fifo = tmp_path / "live.y4m"
    os.mkfifo(fifo)
    out = tmp_path / "x.gnvc"
    # faulthandler: a child that outlives the SIGINT is made to print its stacks (SIGABRT) below.
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gnvc", "encode", str(fifo), "-o", str(out), "--weights", str(weights)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=_sigint_as_on_a_terminal,  # noqa: PLW1509 - only resets a signal before exec
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:  # opening the write end succeeds once gnvc has opened the FIFO for reading
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
                time.sleep(0.1)
        time.sleep(0.5)  # now blocked reading the y4m header
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            _, err = proc.communicate(timeout=30)
            pytest.fail(f"gnvc encode still ran 60 s after SIGINT; its stacks:\n{err[-6000:]}")
        os.close(fd)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err and not out.exists()


def test_quiet_silences_status_lines_and_bars_only_on_a_terminal(capsys, weights, clip, tmp_path):
    code, out, err = _run(capsys, "encode", str(clip), "-o", str(tmp_path / "a.gnvc"), "--weights", str(weights))
    assert code == 0 and "bytes" in out
    assert "frame/s" not in err and "it/s" not in err  # stderr is not a terminal: no progress bar
    for args in (("--quiet", "encode"), ("encode", "--quiet")):
        code, out, err = _run(capsys, *args, str(clip), "-o", str(tmp_path / "b.gnvc"), "--weights", str(weights))
        assert code == 0 and out == "" and err == "", (out, err)
    code, _, err = _run(capsys, "--quiet", "encode", str(clip), "-o", str(tmp_path / "c.gnvc"), "--t-n", "2")
    assert code == 2 and err.startswith("error: t_N")  # errors are never silenced


def _commands(group, prefix=()):
    for name, command in sorted(group.commands.items()):
        yield (*prefix, name)
        if hasattr(command, "commands"):
            yield from _commands(command, (*prefix, name))


def test_every_command_takes_quiet(capsys):
    names = list(_commands(cli))
    assert len(names) >= 10
    for name in names:
        code, out, _ = _run(capsys, *name, "--quiet", "--help")
        assert code == 0 and "--quiet" in out, name
