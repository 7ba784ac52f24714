"""Wan2.1 at its real size without its weights (gnvc.models.wan21): the published configs, the
directory layout, and the ``vae`` / ``prior`` import stages reading it unchanged.

The full-size directory (5.7 GB) is built and imported by bench/wan21_real_size.py; here a
down-scaled one goes through the same code (same writer, same shard logic, same import stages).
"""

from __future__ import annotations

import copy
import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from gnvc.io.video import Video
from gnvc.models import wan21
from gnvc.models.model_dir import GnvcModel
from gnvc.models.profiles import load_profile, merge

SMALL_DIT = {
    **wan21.TRANSFORMER_CONFIG,
    "num_attention_heads": 2,
    "attention_head_dim": 16,
    "ffn_dim": 64,
    "num_layers": 2,
    "text_dim": 32,
    "freq_dim": 32,
}
SMALL_VAE = {**wan21.VAE_CONFIG, "base_dim": 8, "num_res_blocks": 1}
SMALL_CODEC = {"channels": 32, "y_channels": 16, "z_channels": 16, "context_channels": 16, "num_qualities": 3}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_published_configs_have_the_published_sizes() -> None:
    """Parameter counts, the 465-byte transformer config and the 5 GB + 677 MB shards of the
    published directory all follow from the configs written here; the wan2.1 profile agrees."""
    dit, vae = wan21.meta_transformer(), wan21.meta_vae()
    assert wan21.count_parameters(dit) == wan21.TRANSFORMER_PARAMETERS == 1_418_996_800
    assert wan21.count_parameters(vae) == wan21.VAE_PARAMETERS == 126_892_531
    assert len(wan21.config_json(wan21.TRANSFORMER_CONFIG).encode()) == 465
    specs = [(k, v.dtype, tuple(v.shape)) for k, v in dit.state_dict().items()]
    plan = wan21.shard_plan(specs, wan21.SHARD_SIZE)
    sizes = {k: n for k, _, s in specs for n in [4 * int(np.prod(s))]}
    assert [sum(sizes[k] for k in keys) for keys in plan] == [4_998_694_912, 677_292_288]

    profile = load_profile("wan2.1")
    assert profile["refiner"]["transformer"] == wan21.model_kwargs(
        {k: v for k, v in wan21.TRANSFORMER_CONFIG.items() if v is not None}
    ) | {"patch_size": [1, 2, 2]}
    assert {k: v for k, v in wan21.model_kwargs(wan21.VAE_CONFIG).items() if k in profile["vae"]} == profile["vae"]


def test_build_is_seeded_sharded_and_loads(tmp_path: Path) -> None:
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    kw = {"transformer_config": SMALL_DIT, "vae_config": SMALL_VAE, "max_shard_bytes": 100_000}
    summary = wan21.build(tmp_path / "a", seed=3, **kw)
    wan21.build(tmp_path / "b", seed=3, **kw)
    wan21.build(tmp_path / "c", seed=4, **kw)
    a, b, c = (_files(tmp_path / n) for n in "abc")
    assert a == b, "one seed must give byte-identical files"
    weights = [k for k in a if k.endswith(".safetensors")]
    assert all(a[k] != c[k] for k in weights), "another seed must give other weights"
    assert len(summary["transformer"]["files"]) > 1 and (tmp_path / "a/transformer" / wan21.INDEX_NAME).is_file()
    assert json.loads(a["model_index.json"])["transformer"] == ["diffusers", "WanTransformer3DModel"]

    dit = WanTransformer3DModel.from_pretrained(str(tmp_path / "a/transformer"), local_files_only=True)
    vae = AutoencoderKLWan.from_pretrained(str(tmp_path / "a/vae"), local_files_only=True)
    on_disk: dict[str, torch.Tensor] = {}
    for name in summary["transformer"]["files"]:
        on_disk.update(load_file(str(tmp_path / "a/transformer" / name)))
    assert set(on_disk) == set(dit.state_dict())
    assert all(torch.equal(v, dit.state_dict()[k]) for k, v in on_disk.items())
    assert wan21.count_parameters(vae) == summary["vae"]["parameters"]
    # Initialised as the classes initialise: norms at 1, modulation tables ~ N(0, 1/dim), finite outputs.
    gammas = [p for n, p in vae.named_parameters() if n.endswith("gamma")]
    assert gammas and all(torch.equal(g, torch.ones_like(g)) for g in gammas)
    table = dit.scale_shift_table
    assert 0.5 < float(table.std() * table.shape[-1] ** 0.5) < 2.0
    with torch.no_grad():
        y = dit(torch.randn(1, 16, 2, 4, 4), torch.tensor([500.0]), torch.zeros(1, 8, 32), return_dict=False)[0]
    assert torch.isfinite(y).all() and y.std() > 0
    with pytest.raises(Exception, match="exists"):
        wan21.build(tmp_path / "a", seed=3, **kw)


def test_vae_and_prior_import_read_it(tmp_path: Path) -> None:
    """The pipeline's import stages take the directory as it is; importing twice gives one weights
    hash (the fresh adapter is seeded); the imported model codes a clip."""
    from gnvc.stages import prior, vae
    from gnvc.videocodec import decode_video, encode_video

    src = tmp_path / "Wan2.1-T2V-1.3B-Diffusers"
    wan21.build(src, seed=0, transformer_config=SMALL_DIT, vae_config=SMALL_VAE, max_shard_bytes=100_000)
    profile = merge(
        load_profile("wan2.1"),
        {
            "name": "wan2.1",
            "vae": wan21.model_kwargs(SMALL_VAE),
            "codec": SMALL_CODEC,
            "refiner": {"transformer": wan21.model_kwargs(SMALL_DIT) | {"patch_size": [1, 2, 2]},
                        "null_text": {"length": 8}, "adapter": {"context_channels": 16, "hidden_dim": 16}},
        },
    )  # fmt: skip
    profile_file = tmp_path / "wan2.1-small.yaml"
    profile_file.write_text(yaml.safe_dump(profile))
    name = str(profile_file)
    params: dict[str, Any] = {
        "profile": name,
        "seed": 0,
        "vae": {"import_profiles": [name], "import_from": str(src), "output": str(tmp_path / "vae")},
        "prior": {"import_profiles": [name], "import_from": str(src), "input": str(tmp_path / "vae"),
                  "output": str(tmp_path / "prior")},
    }  # fmt: skip
    assert vae.run(params)["imported_from"] == str(src)
    first = prior.run(params)
    torch.manual_seed(123)  # whatever the global RNG holds, the import is the same
    again = copy.deepcopy(params)
    again["prior"]["output"] = str(tmp_path / "prior2")
    assert prior.run(again)["weights_hash"] == first["weights_hash"]

    model = GnvcModel.from_pretrained(tmp_path / "prior")
    assert model.weights_hash.hex() == first["weights_hash"]
    vae_files = load_file(str(src / "vae" / wan21.WEIGHTS_NAME))
    assert all(torch.equal(v, model.vae.vae.state_dict()[k]) for k, v in vae_files.items())
    dit_state = model.refiner.transformer.state_dict()
    for shard in sorted((src / "transformer").glob("*.safetensors")):
        assert all(torch.equal(v, dit_state[k]) for k, v in load_file(str(shard)).items())
    assert model.profile["refiner"]["transformer"]["num_layers"] == SMALL_DIT["num_layers"]

    rng = np.random.default_rng(0)
    clip = Video(rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8), Fraction(25))
    res = encode_video(model, clip, quality=1, steps=1)
    out = decode_video(model, res.data)
    assert out.frames.shape == clip.frames.shape


def _bench_module() -> Any:
    """bench/wan21_real_size.py, whose counting the memory model in docs/training.md rests on."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "bench" / "wan21_real_size.py"
    spec = importlib.util.spec_from_file_location("wan21_real_size", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("tuning", ["lora", "frozen"])
def test_meta_counts_equal_cpu_counts(tuning: str) -> None:
    """The saved-activation bytes counted on the meta device (how docs/training.md sizes
    81×480×832 clips) equal the bytes a real CPU run saves, for a DiT evaluation and a VAE decode."""
    from diffusers import AutoencoderKLWan

    from gnvc.models.vae import VideoVAE
    from gnvc.refiner import Refiner

    bench = _bench_module()
    cfg = {
        "transformer": wan21.model_kwargs(SMALL_DIT),
        "null_text": {"length": 8, "init": "zeros"},
        "adapter": {"context_channels": 64, "hidden_dim": 16},
    }
    counts = []
    for device in ("cpu", "meta"):
        with torch.device(device):
            refiner = Refiner.from_config(cfg)
        refiner.set_tuning(tuning, {"rank": 4})
        counter = bench.SavedBytes([refiner])
        x = torch.randn(1, 16, 3, 8, 8, device=device)
        ctx = torch.randn(1, 64, 3, 8, 8, device=device, requires_grad=True)
        with bench.flash_sdpa(), counter():
            refiner.velocity(x, torch.tensor([0.8], device=device), ctx)
        counts.append(counter.total)
    assert counts[0] == counts[1] > 0

    vae_counts = []
    for device in ("cpu", "meta"):
        with torch.device(device):
            vae = VideoVAE(AutoencoderKLWan(base_dim=8, num_res_blocks=1))
        vae.requires_grad_(False)
        vae_counts.append(bench._vae_decode_saved(vae, torch.randn(1, 16, 3, 4, 4, device=device)))
    assert vae_counts[1] == pytest.approx(vae_counts[0], rel=0.01)
