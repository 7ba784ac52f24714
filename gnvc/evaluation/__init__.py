"""Evaluation: anchors, BD-rate, RD plots and reports, behind :func:`evaluate_videos`.

- :mod:`.anchors`     VVC/x265/SVT-AV1/x264 through FFmpeg (low delay, fixed QP), decoded with PyAV
- :mod:`.elementary`  elementary-stream surgery (encoder-info SEI, AV1 temporal units)
- :mod:`.methods`     the method interface; :class:`AnchorMethod`, :class:`GnvcMethod`
- :mod:`.bdrate`      Bjøntegaard delta rate (``bjontegaard`` package, pchip)
- :mod:`.plots`, :mod:`.visuals`, :mod:`.report`  figures and the written report
- :mod:`.evaluate`    :func:`evaluate_videos` and its picklable jobs
"""

from gnvc.evaluation.anchors import ANCHORS, decode_anchor, encode_anchor
from gnvc.evaluation.bdrate import BDResult, bd_rate
from gnvc.evaluation.evaluate import EvalJob, evaluate_videos, run_job
from gnvc.evaluation.methods import AnchorMethod, GnvcMethod, Method, RatePoint, build_methods

__all__ = [
    "ANCHORS",
    "AnchorMethod",
    "BDResult",
    "EvalJob",
    "GnvcMethod",
    "Method",
    "RatePoint",
    "bd_rate",
    "build_methods",
    "decode_anchor",
    "encode_anchor",
    "evaluate_videos",
    "run_job",
]
