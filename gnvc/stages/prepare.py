"""Stage ``prepare``: sources → fixed-length clips in Parquet shards (``data:`` section of params.yaml).

A thin entry point: the work lives in :mod:`gnvc.data.prepare`, so ``gnvc data prepare``, this
stage and the Prefect flow all run the same code.
"""

from __future__ import annotations

from typing import Any

from gnvc.data.prepare import prepare_dataset
from gnvc.errors import ConfigError


def run(params: dict[str, Any], *, progress: bool = True) -> dict[str, Any]:
    """Write ``data.out_dir`` (clip shards + manifest); return counts, bytes and wall time."""
    data = params.get("data")
    if not isinstance(data, dict):
        raise ConfigError("params.yaml has no 'data:' section")
    return prepare_dataset(data, progress=progress)
