"""Stopping a training cleanly on SIGTERM or Ctrl-C: finish the step in flight, checkpoint, exit.

Why: schedulers stop jobs with SIGTERM (Slurm at the time limit, Kubernetes on eviction, a
spot instance's reclaim) and give a grace period; the runner's periodic checkpoints alone lose up
to ``checkpoint_every`` steps of work — minutes on a GPU, up to half an hour on the base release's
CPU. With :class:`StopSignals` the first signal asks :meth:`gnvc.training.runner.Trainer.fit` to
stop after the current step, which it checkpoints (and exports) before raising
:class:`TrainingStopped`; a second signal stops at once, as Ctrl-C always did.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any

from tqdm.auto import tqdm

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class TrainingStopped(KeyboardInterrupt):
    """A training stopped on a signal after checkpointing ``step``: the CLI exits as interrupted
    (130), and the next run resumes from that checkpoint."""

    def __init__(self, name: str, step: int, signum: int) -> None:
        self.name, self.step, self.signum = name, step, signum
        super().__init__(f"{name}: stopped by {signal.Signals(signum).name} at step {step} (checkpointed)")


class StopSignals:
    """Within ``with``: the first SIGTERM/SIGINT is recorded in :attr:`signum` instead of killing
    the process; a second one raises :class:`KeyboardInterrupt` at once. Installed only in the
    main thread (Python delivers signals there; a Ray worker's or a test's other thread keeps its
    handlers); the previous handlers come back on exit."""

    def __init__(self, name: str, *, enabled: bool = True) -> None:
        self.name = name
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        tqdm.write(
            f"{self.name}: {signal.Signals(signum).name}: stopping after this step with a checkpoint "
            "(send it again to stop now)"
        )

    def __enter__(self) -> StopSignals:
        if self.enabled:
            for sig in SIGNALS:
                if signal.getsignal(sig) is not signal.SIG_IGN:  # nohup's and `&`'s choices stand
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
