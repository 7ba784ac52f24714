"""Weights are data, never code: every tampering with a model directory or a training checkpoint
is refused with a WeightsError naming the file, before any tensor is loaded from it."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import struct
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from gnvc.errors import WeightsError
from gnvc.models.model_dir import INDEX_NAME, GnvcModel
from gnvc.models.schema import (
    MAX_PARAMETERS,
    file_digests,
    read_codec_config,
    read_safetensors_header,
    validate_checkpoint,
    validate_model_dir,
)
from gnvc.training.runner import META_NAME, STATE_NAME, TrainConfig, Trainer

CODEC_CFG = "codec/config.json"
CODEC_W = "codec/model.safetensors"
VAE_CFG = "vae/config.json"
REF_CFG = "refiner/config.json"
DIT_CFG = "refiner/transformer/config.json"


@pytest.fixture
def model_dir(tmp_path, tiny_model_dir) -> Path:
    """A private copy of a saved tiny model directory, free to tamper with."""
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "m"))


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data))


def _replace(path: Path, write) -> None:
    """Write a new file then rename it over ``path``: tensors still mapped from the old one stay valid."""
    tmp = path.with_name(path.name + ".new")
    write(tmp)
    os.replace(tmp, path)


def _reseal(d: Path) -> None:
    """Re-record every file's SHA-256 in the index, as a forger who edits the index too would."""
    index = _json(d / INDEX_NAME)
    index["files"] = file_digests(d)
    _write_json(d / INDEX_NAME, index)


def _edit(d: Path, rel: str, change, *, reseal: bool = True) -> None:
    data = _json(d / rel)
    change(data)
    _write_json(d / rel, data)
    if reseal:
        _reseal(d)


def _refused(d: Path, names: str, match: str = "") -> WeightsError:
    """Both validation and loading refuse ``d``, naming the file ``names``."""
    with pytest.raises(WeightsError, match=match) as e:
        GnvcModel.from_pretrained(d)
    assert names in str(e.value), str(e.value)
    return e.value


# ---------------------------------------------------------------------------------------------- valid
def test_a_saved_directory_validates_and_loads_with_the_same_hash(model_dir, tiny_model):
    spec = validate_model_dir(model_dir)
    assert spec.weights_hash == tiny_model.weights_hash.hex()
    assert 1e6 < spec.parameters < MAX_PARAMETERS  # counted on the meta device, never allocated
    assert set(spec.files) == {p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*.*")} - {INDEX_NAME}
    loaded = GnvcModel.from_pretrained(model_dir)
    assert loaded.weights_hash == tiny_model.weights_hash
    assert read_codec_config(model_dir)["num_qualities"] == tiny_model.codec.num_qualities


def test_notes_are_allowed_but_not_pickles_in_disguise(model_dir):
    (model_dir / "README.md").write_text("trained on synthetic clips\n")
    GnvcModel.from_pretrained(model_dir)
    (model_dir / "vae" / "notes.txt").write_bytes(pickle.dumps({"a": 1}, protocol=4))
    _refused(model_dir, "vae/notes.txt", "pickle")


# ---------------------------------------------------------------------------------------------- pickles
@pytest.mark.parametrize("name", ["vae/diffusion_pytorch_model.bin", "codec/model.pt", "evil.pth", "x.ckpt", "a.pkl"])
def test_any_pickle_format_file_is_refused_by_name(model_dir, name):
    (model_dir / name).write_bytes(b"not even read")
    _refused(model_dir, name, "pickle-format")


def test_torch_save_under_a_safetensors_name_is_refused(model_dir):
    tensors = load_file(str(model_dir / CODEC_W))
    _replace(model_dir / CODEC_W, lambda p: torch.save(tensors, p))
    _refused(model_dir, CODEC_W, "zip")


def test_raw_pickle_bytes_replacing_a_config_are_refused(model_dir):
    (model_dir / CODEC_CFG).write_bytes(pickle.dumps(["os.system"], protocol=2))
    _refused(model_dir, CODEC_CFG, "pickle")


def test_symlinks_are_refused(model_dir, tmp_path):
    (tmp_path / "elsewhere.json").write_text("{}")
    (model_dir / "codec" / "link.json").symlink_to(tmp_path / "elsewhere.json")
    _refused(model_dir, "codec/link.json", "symbolic link")


# ---------------------------------------------------------------------------------------------- configs
@pytest.mark.parametrize(
    "rel,key,value,match",
    [
        (CODEC_CFG, "channels", "64", "must be an integer"),
        (CODEC_CFG, "num_qualities", 0, "num_qualities must be an integer in 1..64"),
        (CODEC_CFG, "num_qualities", 1000, "1..64"),
        (CODEC_CFG, "evil", 1, "unknown field 'evil'"),
        (CODEC_CFG, "gain_range", [1.0, -1.0], "increasing"),
        (VAE_CFG, "z_dim", 16.5, "z_dim must be an integer"),
        (VAE_CFG, "latents_std", [-1.0] * 16, "latents_std"),
        (VAE_CFG, "_class_name", "SomethingElse", "_class_name"),
        (VAE_CFG, "exec", "import os", "unknown field 'exec'"),
        (REF_CFG, "window_overlap", -1, "window_overlap"),
        (DIT_CFG, "num_layers", True, "num_layers must be an integer"),
        (DIT_CFG, "eps", 2.0, "eps"),
    ],
)
def test_config_fields_are_typed_and_bounded(model_dir, rel, key, value, match):
    _edit(model_dir, rel, lambda c: c.__setitem__(key, value))
    _refused(model_dir, rel, match)


def test_a_config_edited_without_resealing_fails_its_digest(model_dir):
    _edit(model_dir, CODEC_CFG, lambda c: c.__setitem__("channels", 65), reseal=False)
    _refused(model_dir, CODEC_CFG, "SHA-256")


def test_a_file_that_is_not_json_is_named(model_dir):
    (model_dir / CODEC_CFG).write_text("{channels: 64")
    _reseal(model_dir)
    _refused(model_dir, CODEC_CFG, "not valid JSON")


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda i: i["profile"]["coding"].__setitem__("t_n", 1.5), "t_n"),
        (lambda i: i["profile"]["coding"].__setitem__("steps", 300), "0..255"),
        (lambda i: i.__setitem__("weights_hash", "xyz"), "16 hex digits"),
        (lambda i: i.__setitem__("loader", "pickle"), "unknown field 'loader'"),
        (lambda i: i["profile"].pop("codec"), "'codec' is missing"),
    ],
)
def test_the_index_and_its_profile_are_validated(model_dir, change, match):
    _edit(model_dir, INDEX_NAME, change, reseal=False)
    _refused(model_dir, INDEX_NAME, match)


def test_codec_latent_channels_must_equal_the_vae_z_dim(model_dir):
    def eight(c):
        c["latent_channels"] = 8

    _edit(model_dir, CODEC_CFG, eight)
    _edit(model_dir, INDEX_NAME, lambda i: eight(i["profile"]["codec"]), reseal=False)
    _refused(model_dir, CODEC_CFG, "≠ the VAE's z_dim 16")


def test_adapter_context_channels_must_equal_the_codec(model_dir):
    _edit(model_dir, REF_CFG, lambda c: c["adapter"].__setitem__("context_channels", 16))
    _refused(model_dir, REF_CFG, "context_channels 16 ≠ the codec's context_channels 32")


def test_a_component_config_must_agree_with_the_profile(model_dir):
    _edit(model_dir, CODEC_CFG, lambda c: c.__setitem__("y_channels", 48))
    _refused(model_dir, CODEC_CFG, "disagrees with profile.codec.y_channels")


def test_an_absurd_model_is_refused_before_allocation(model_dir):
    def huge(t):
        t.update(num_layers=400, num_attention_heads=64, attention_head_dim=128, ffn_dim=200_000)

    _edit(model_dir, DIT_CFG, huge)
    _edit(model_dir, REF_CFG, lambda c: c["adapter"].update(inner_dim=64 * 128, num_layers=400))
    _edit(model_dir, INDEX_NAME, lambda i: huge(i["profile"]["refiner"]["transformer"]), reseal=False)
    start = time.perf_counter()
    _refused(model_dir, DIT_CFG, "parameters")
    assert time.perf_counter() - start < 10  # nothing of the ~10¹¹ parameters was allocated


def test_an_absurd_vae_is_counted_on_the_meta_device(model_dir):
    def wide(v):
        v.update(base_dim=4096, dim_mult=[1, 4, 4, 4])

    _edit(model_dir, VAE_CFG, wide)
    _edit(model_dir, INDEX_NAME, lambda i: wide(i["profile"]["vae"]), reseal=False)
    err = _refused(model_dir, INDEX_NAME, "refusing before allocating")
    assert "·10⁹ parameters" in str(err)


# ---------------------------------------------------------------------------------------------- tensors
def _rewrite_codec(d: Path, change) -> None:
    tensors = load_file(str(d / CODEC_W))
    change(tensors)
    _replace(d / CODEC_W, lambda p: save_file(tensors, str(p)))
    _reseal(d)


def test_a_tensor_of_the_wrong_shape_is_refused_from_the_header(model_dir):
    _rewrite_codec(model_dir, lambda t: t.__setitem__("log_gain", torch.zeros(7, 32)))
    _refused(model_dir, CODEC_W, r"'log_gain' has shape \[7, 32\], expected \[6, 32\]")


def test_a_tensor_of_the_wrong_dtype_is_refused(model_dir):
    _rewrite_codec(model_dir, lambda t: t.__setitem__("log_gain", t["log_gain"].double()))
    _refused(model_dir, CODEC_W, "is F64, expected F32")


def test_a_renamed_tensor_is_refused(model_dir):
    _rewrite_codec(model_dir, lambda t: t.__setitem__("log_gain_", t.pop("log_gain")))
    _refused(model_dir, CODEC_W, "'log_gain' is missing")


def test_an_integer_weight_must_match_its_layer(model_dir):
    key = "context_to_y.0.int_weight"
    _rewrite_codec(model_dir, lambda t: t.__setitem__(key, torch.zeros(64, 32, 3, 4, dtype=torch.int32)))
    _refused(model_dir, CODEC_W, key)


def test_a_header_that_lies_about_its_length_is_refused(model_dir):
    w = model_dir / CODEC_W
    data = w.read_bytes()
    w.write_bytes(struct.pack("<Q", 1 << 40) + data[8:])
    _reseal(model_dir)
    _refused(model_dir, CODEC_W, "header length")


def test_overlapping_data_offsets_are_refused(tmp_path):
    header = {
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
    }
    raw = json.dumps(header).encode()
    path = tmp_path / "x.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(12))
    with pytest.raises(WeightsError, match="overlap"):
        read_safetensors_header(path)


def test_flipped_tensor_bytes_fail_the_file_digest(model_dir):
    w = model_dir / "vae" / "diffusion_pytorch_model.safetensors"
    data = bytearray(w.read_bytes())
    data[-5] ^= 0x40
    w.write_bytes(bytes(data))
    _refused(model_dir, "vae/diffusion_pytorch_model.safetensors", "SHA-256")


def test_flipped_bytes_with_resealed_digests_fail_the_weights_hash(model_dir):
    w = model_dir / "refiner" / "refiner.safetensors"
    data = bytearray(w.read_bytes())
    data[-3] ^= 0x01
    w.write_bytes(bytes(data))
    _reseal(model_dir)
    validate_model_dir(model_dir)  # every header is still well-formed...
    _refused(model_dir, INDEX_NAME, "weights_hash")  # ...but the tensors are not the ones saved


def test_missing_and_unlisted_weight_files_are_named(model_dir):
    extra = model_dir / "codec" / "extra.safetensors"
    save_file({"x": torch.zeros(1)}, str(extra))
    _refused(model_dir, "codec/extra.safetensors", "not listed")
    extra.unlink()
    (model_dir / "refiner" / "refiner.safetensors").unlink()
    _refused(model_dir, "refiner/refiner.safetensors", "missing")


# ---------------------------------------------------------------------------------------------- checkpoints
class _Net(nn.Module):
    def __init__(self, width: int = 3) -> None:
        super().__init__()
        self.lin = nn.Linear(4, width)
        self.register_buffer("count", torch.zeros((), dtype=torch.int64))


def _trainer(run: Path, *, width: int = 3, steps: int = 2, export: Path | None = None) -> Trainer:
    torch.manual_seed(0)
    net = _Net(width)
    cfg = TrainConfig(steps=steps, checkpoint_every=1, log_every=1, seed=1, progress=False)
    tr = Trainer("t", {"net": net}, list(net.parameters()), cfg, run_dir=run, export_dir=export)

    def step(t: Trainer) -> dict[str, torch.Tensor]:
        return {"loss": net.lin(t.randn((2, 4))).pow(2).mean()}

    tr.fit(step)
    return tr


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    tr = _trainer(tmp_path / "run", export=tmp_path / "export")
    return tr._checkpoints()[-1]


def _reload(ckpt: Path, width: int = 3) -> None:
    net = _Net(width)
    cfg = TrainConfig(steps=2, resume=False, progress=False)
    Trainer("t", {"net": net}, list(net.parameters()), cfg, run_dir=ckpt.parent / "fresh").load_checkpoint(ckpt)


def test_valid_full_and_exported_checkpoints_restore(checkpoint):
    assert validate_checkpoint(checkpoint)["step"] == 2
    _reload(checkpoint)
    export = checkpoint.parents[1] / "export"
    assert read_safetensors_header(export / STATE_NAME)["model.net.lin.weight"].dtype == "BF16"
    _reload(export)


def test_a_pickle_next_to_a_checkpoint_is_refused(checkpoint):
    torch.save({"x": 1}, checkpoint / "optimizer.pt")
    with pytest.raises(WeightsError, match="optimizer.pt: pickle-format"):
        _reload(checkpoint)


def test_an_unexpected_file_in_a_checkpoint_is_refused(checkpoint):
    (checkpoint / "hook.json").write_text("{}")
    with pytest.raises(WeightsError, match="hook.json: unexpected file"):
        _reload(checkpoint)


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda m: m.__setitem__("step", "2"), "step must be an integer"),
        (lambda m: m.pop("optimizer"), "'optimizer' is missing"),
        (lambda m: m.__setitem__("streams", {"latents": -4}), "streams"),
        (lambda m: m.__setitem__("rng_numpy", ["MT19937", [0], 0, 0, 0.0]), "rng_numpy"),
    ],
)
def test_trainer_json_is_validated(checkpoint, change, match):
    meta = _json(checkpoint / META_NAME)
    change(meta)
    _write_json(checkpoint / META_NAME, meta)
    with pytest.raises(WeightsError, match=match) as e:
        _reload(checkpoint)
    assert META_NAME in str(e.value)


def test_checkpoint_tensors_are_checked_against_the_modules(checkpoint):
    with pytest.raises(WeightsError, match=r"state.safetensors: tensor 'model.net.lin.weight' has shape \[3, 4\]"):
        _reload(checkpoint, width=5)


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda t: t.__setitem__("model.net.lin.wieght", t.pop("model.net.lin.weight")), "is missing"),
        (lambda t: t.__setitem__("payload", torch.zeros(3)), "unexpected tensor 'payload'"),
        (lambda t: t.__setitem__("rng.torch_cpu", t["rng.torch_cpu"].float()), "uint8"),
        (lambda t: t.__setitem__("model.other.w", torch.zeros(3)), "belongs to no module"),
    ],
)
def test_checkpoint_state_tampering_is_refused(checkpoint, change, match):
    tensors = load_file(str(checkpoint / STATE_NAME))
    change(tensors)
    _replace(checkpoint / STATE_NAME, lambda p: save_file(tensors, str(p)))
    with pytest.raises(WeightsError, match=match) as e:
        _reload(checkpoint)
    assert STATE_NAME in str(e.value)


def test_resume_refuses_a_tampered_checkpoint(checkpoint, tmp_path):
    with open(checkpoint / STATE_NAME, "r+b") as f:
        f.write(struct.pack("<Q", 10))  # header length no longer matches its JSON
    with pytest.raises(WeightsError, match="state.safetensors"):
        _trainer(tmp_path / "run", export=None)
