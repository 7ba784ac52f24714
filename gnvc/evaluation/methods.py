"""Methods under evaluation: the conventional anchors and gnvc itself, behind one small interface.

A method lists its rate points and codes a video at one of them, returning the exact bytes that
are counted and the decoded video that is measured. :func:`gnvc.evaluation.evaluate.evaluate_videos`
treats every method alike, so gnvc is compared under exactly the anchors' conditions (same frames,
same metrics, same rate accounting).

Methods are small picklable objects (names and numbers only): a Ray/Prefect fan-out ships them
to workers, where the gnvc model is loaded once per process.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from gnvc.errors import InputError
from gnvc.evaluation.anchors import anchor_spec, decode_anchor, encode_anchor
from gnvc.io.video import Video


@dataclass(frozen=True)
class RatePoint:
    """One operating point of a method: a QP for anchors, a quality index for gnvc."""

    label: str
    value: int


@dataclass
class Coded:
    """The result of coding one video at one rate point."""

    data: bytes  # exactly the bytes the rate is computed from
    decoded: Video
    encode_seconds: float
    decode_seconds: float
    info: dict = field(default_factory=dict)


@runtime_checkable
class Method(Protocol):
    """What :func:`evaluate_videos` needs from a method."""

    name: str
    label: str
    kind: str  # "anchor" or "gnvc"

    def points(self) -> list[RatePoint]: ...

    def code(self, video: Video, point: RatePoint) -> Coded: ...

    def describe(self) -> dict: ...


@dataclass
class AnchorMethod:
    """A conventional codec run through FFmpeg (see :mod:`gnvc.evaluation.anchors`)."""

    anchor: str
    qps: Sequence[int] | None = None
    preset: str | None = None
    kind: str = "anchor"

    def __post_init__(self) -> None:
        spec = anchor_spec(self.anchor)
        self.anchor = spec.name
        self.qps = sorted({int(q) for q in (self.qps or spec.default_qps)})
        lo, hi = spec.qp_range
        bad = [q for q in self.qps if not lo <= q <= hi]
        if bad:
            raise InputError(f"{spec.name}: QPs {bad} outside {lo}..{hi}")
        self.preset = str(self.preset or spec.default_preset)

    @property
    def name(self) -> str:
        return self.anchor

    @property
    def label(self) -> str:
        return anchor_spec(self.anchor).label

    def points(self) -> list[RatePoint]:
        return [RatePoint(f"qp{q}", q) for q in self.qps]

    def code(self, video: Video, point: RatePoint) -> Coded:
        stream = encode_anchor(video, self.anchor, point.value, preset=self.preset)
        t0 = time.perf_counter()
        decoded = decode_anchor(stream.data, self.anchor, width=video.width, height=video.height, fps=video.fps)
        return Coded(
            stream.data,
            decoded,
            stream.seconds,
            time.perf_counter() - t0,
            {"qp": point.value, "stripped_sei_bytes": stream.stripped_bytes, "command": stream.command[1:]},
        )

    def describe(self) -> dict:
        spec = anchor_spec(self.anchor)
        return {
            "kind": "anchor",
            "label": spec.label,
            "encoder": spec.encoder,
            "decoder": spec.decoder,
            "stream_format": spec.stream_format,
            "bit_depth": spec.bit_depth,
            "preset": self.preset,
            "qps": list(self.qps),
            "options": spec.encoder_args(0, self.preset),
        }


@functools.lru_cache(maxsize=2)
def load_gnvc_model(weights: str, device: str = "cpu"):
    """``GnvcModel.from_pretrained`` once per process and device (workers reuse it across jobs)."""
    from gnvc.models.model_dir import GnvcModel

    return GnvcModel.from_pretrained(weights).to(device).eval()


@dataclass
class GnvcMethod:
    """gnvc itself: ``encode_video`` at a quality index, ``decode_video`` with or without refinement.

    ``steps=None`` decodes with the refinement steps written in the stream; ``steps=0`` turns
    refinement off (the decoded latents go straight to the VAE decoder).
    """

    weights: str | Path
    qualities: Sequence[int] | None = None
    steps: int | None = None
    device: str = "cpu"
    name: str = "gnvc"
    kind: str = "gnvc"

    def __post_init__(self) -> None:
        self.weights = str(self.weights)
        if self.qualities is not None:
            self.qualities = sorted({int(q) for q in self.qualities})

    @property
    def label(self) -> str:
        return "gnvc" + (" (no refinement)" if self.steps == 0 else "")

    def _model(self):
        return load_gnvc_model(self.weights, self.device)

    def points(self) -> list[RatePoint]:
        n = int(self._model().codec.num_qualities)
        qualities = list(range(n)) if self.qualities is None else list(self.qualities)
        bad = [q for q in qualities if not 0 <= q < n]
        if bad:
            raise InputError(f"gnvc qualities {bad} outside this model's 0..{n - 1}")
        return [RatePoint(f"q{q}", q) for q in qualities]

    def code(self, video: Video, point: RatePoint) -> Coded:
        from gnvc.videocodec import decode_video, encode_video

        model = self._model()
        t0 = time.perf_counter()
        result = encode_video(model, video, point.value)
        data = result if isinstance(result, bytes | bytearray) else result.data
        t1 = time.perf_counter()
        decoded = decode_video(model, bytes(data), steps=self.steps)
        t2 = time.perf_counter()
        return Coded(bytes(data), decoded, t1 - t0, t2 - t1, {"quality": point.value, "steps": self.steps})

    def describe(self) -> dict:
        model = self._model()
        return {
            "kind": "gnvc",
            "label": self.label,
            "weights": self.weights,
            "profile": getattr(model, "name", None),
            "weights_hash": bytes(getattr(model, "weights_hash", b"")).hex(),
            "num_qualities": int(model.codec.num_qualities),
            "steps": self.steps,
            "device": self.device,
        }


def build_methods(
    anchors: Sequence[str] = (),
    *,
    qps: dict[str, Sequence[int]] | None = None,
    presets: dict[str, str] | None = None,
    weights: str | Path | None = None,
    qualities: Sequence[int] | None = None,
    refinement: str = "on",
    device: str = "cpu",
) -> list[Method]:
    """Methods from CLI-style settings: anchors by name, plus gnvc when ``weights`` is given.

    ``refinement`` is ``on`` (the stream's steps), ``off`` (steps=0) or ``both`` (two methods).
    """
    qps, presets = qps or {}, presets or {}
    methods: list[Method] = []
    if weights is not None:
        if refinement not in ("on", "off", "both"):
            raise InputError(f"refinement must be on, off or both, got {refinement!r}")
        if refinement in ("on", "both"):
            methods.append(GnvcMethod(weights, qualities, None, device))
        if refinement in ("off", "both"):
            methods.append(GnvcMethod(weights, qualities, 0, device, name="gnvc-noref"))
    for a in anchors:
        name = anchor_spec(a).name
        methods.append(AnchorMethod(name, qps.get(name), presets.get(name)))
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise InputError(f"a method is listed twice: {', '.join(names)}")
    if not methods:
        raise InputError("nothing to evaluate: give --weights and/or --anchors")
    return methods
