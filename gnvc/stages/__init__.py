"""Pipeline stages, one module each: ``prepare → vae → latents → prior → stage1 → stage2 → evaluate``.

Every stage is ``gnvc.stages.<name>.run(params: dict) -> dict`` (the whole ``params.yaml`` in, flat
metrics out). ``dvc.yaml`` calls them through ``gnvc stage <name>``, the Prefect flows through
:func:`gnvc.stages.runner.run_stage`: one implementation, three entry points.
"""

STAGES: tuple[str, ...] = ("prepare", "vae", "latents", "prior", "stage1", "stage2", "evaluate")
