"""Training: the shared runner (:mod:`gnvc.training.runner`), the losses of the four trainings
(:mod:`gnvc.training.losses`) and what the stages share (:mod:`gnvc.training.common`).

The stages themselves are ``gnvc.stages.{vae,prior,stage1,stage2}``, each ``run(params) -> dict``.
"""

from gnvc.training.runner import DataStream, TrainConfig, Trainer, fingerprint

__all__ = ["DataStream", "TrainConfig", "Trainer", "fingerprint"]
