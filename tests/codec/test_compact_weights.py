"""Compact storage of model directories (how the shipped release fits in git): lossless, validated,
and ``--half`` a deliberate new model that codes streams exactly like the directory it loads from."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors import safe_open
from safetensors.torch import save_file

from gnvc.cli import cli
from gnvc.errors import BitstreamError, WeightsError
from gnvc.models.model_dir import GnvcModel
from gnvc.models.schema import read_safetensors_header
from gnvc.tensor_files import LOGICAL_DTYPES_KEY, compact_file, load_tensors, narrowest_dtype
from gnvc.videocodec import decode_video, encode_video

from .conftest import random_video

CODEC_W = "codec/model.safetensors"


def _dtypes(path: Path) -> dict[str, str]:
    return {k: v.dtype for k, v in read_safetensors_header(path).items()}


def _stored(path: Path, name: str) -> torch.dtype:
    with safe_open(str(path), framework="pt") as f:
        return f.get_slice(name).get_dtype()


def test_narrowest_dtype_is_exact_or_wide():
    assert narrowest_dtype(torch.tensor([1.5, -2.0, 0.0])) == torch.float16
    assert narrowest_dtype(torch.tensor([1e-3])) == torch.float32  # not a float16 number
    assert narrowest_dtype(torch.tensor([2.0**100])) == torch.bfloat16  # beyond float16's range
    assert narrowest_dtype(torch.tensor([float("nan")])) == torch.float32
    assert narrowest_dtype(torch.tensor([3, -100], dtype=torch.int32)) == torch.int8
    assert narrowest_dtype(torch.tensor([32767], dtype=torch.int32)) == torch.int16
    assert narrowest_dtype(torch.tensor([1 << 20], dtype=torch.int64)) == torch.int32
    assert narrowest_dtype(torch.tensor([1 << 40], dtype=torch.int64)) == torch.int64


def test_compact_file_round_trips_every_tensor(tmp_path):
    tensors = {
        "half": torch.arange(-500, 500) * 0.25,
        "wide": torch.tensor([0.1, 0.2]),
        "small_ints": torch.arange(-100, 100, dtype=torch.int32),
        "index": torch.tensor([1 << 40, 3], dtype=torch.int64),
        "empty": torch.zeros(0, dtype=torch.int32),
    }
    path = tmp_path / "t.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt"})
    before, after = compact_file(path)
    assert after < before
    loaded = load_tensors(path)
    assert set(loaded) == set(tensors)
    for k, t in tensors.items():
        assert loaded[k].dtype == t.dtype and torch.equal(loaded[k], t), k
    assert _stored(path, "half") == "F16" and _stored(path, "small_ints") == "I8" and _stored(path, "wide") == "F32"
    # the header validator reports the dtype each tensor loads as
    assert _dtypes(path) == {"half": "F32", "wide": "F32", "small_ints": "I32", "index": "I64", "empty": "I32"}
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata()["format"] == "pt"  # other metadata survives


def test_compact_files_are_byte_reproducible(tmp_path):
    """The same tensors give the same bytes, whatever order the metadata or tensors came in: a
    repacked release adds no new blob to git or the DVC cache. (safetensors' own writer keeps
    metadata in a hash map, so two keys came out in either order.)"""
    rng = torch.Generator().manual_seed(0)
    tensors = {f"t{i}": torch.randn(3, 5, generator=rng).half().float() for i in range(6)}
    tensors["scalar"] = torch.tensor(0.5)
    tensors["ints"] = torch.arange(7, dtype=torch.int64)
    tensors["bf"] = torch.randn(9, generator=rng).to(torch.bfloat16)
    blobs = []
    for run, meta in enumerate([{"format": "pt", "z": "1"}, {"z": "1", "format": "pt"}]):
        path = tmp_path / f"{run}.safetensors"
        order = list(tensors) if run == 0 else list(reversed(tensors))
        save_file({k: tensors[k] for k in order}, str(path), metadata=meta)
        compact_file(path)
        blobs.append(path.read_bytes())
        loaded = load_tensors(path)
        assert all(loaded[k].dtype == t.dtype and torch.equal(loaded[k], t) for k, t in tensors.items())
        with safe_open(str(path), framework="pt") as f:
            assert f.metadata()["z"] == "1"
    assert blobs[0] == blobs[1]


def test_packing_the_same_model_from_two_places_gives_the_same_files(tmp_path, tiny_model_dir):
    """No trace of where a model was loaded from (diffusers' ``_name_or_path``) in what is saved."""
    import shutil

    other = tmp_path / "elsewhere" / "model"
    shutil.copytree(tiny_model_dir, other)
    outs = [tmp_path / "a", tmp_path / "b"]
    for src, out in zip([tiny_model_dir, other], outs, strict=True):
        assert CliRunner().invoke(cli, ["model", "pack", str(src), "-o", str(out), "--half"]).exit_code == 0
    files = sorted(p.relative_to(outs[0]) for p in outs[0].rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(outs[1]) for p in outs[1].rglob("*") if p.is_file())
    for rel in files:
        assert (outs[0] / rel).read_bytes() == (outs[1] / rel).read_bytes(), rel
    assert all("_name_or_path" not in p.read_text() for p in outs[0].rglob("config.json"))


def test_a_model_packed_exactly_keeps_its_hash_and_shrinks(tmp_path, tiny_model_dir, tiny_model):
    out = tmp_path / "packed"
    r = CliRunner().invoke(cli, ["model", "pack", str(tiny_model_dir), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert (out / CODEC_W).stat().st_size < (tiny_model_dir / CODEC_W).stat().st_size
    assert _stored(out / CODEC_W, "context_to_y.0.int_weight") == "I16"  # |W| < 2^15 by the format
    loaded = GnvcModel.from_pretrained(out)
    assert loaded.weights_hash == tiny_model.weights_hash
    sd = loaded.codec.state_dict()
    for k, v in tiny_model.codec.state_dict().items():
        assert sd[k].dtype == v.dtype and torch.equal(sd[k], v), k


def test_repacking_a_release_keeps_its_model_card_and_never_deletes_other_files(tmp_path, tiny_model_dir):
    """``gnvc model pack … -o weights/NAME`` replaces the model, not the card written beside it."""
    out = tmp_path / "release"
    assert CliRunner().invoke(cli, ["model", "pack", str(tiny_model_dir), "-o", str(out)]).exit_code == 0
    (out / "MODEL_CARD.md").write_text("# numbers a person measured\n")
    (out / "codec" / "model.safetensors").write_bytes(b"stale")  # the model's own files are replaced
    r = CliRunner().invoke(cli, ["model", "pack", str(tiny_model_dir), "-o", str(out), "--half"])
    assert r.exit_code == 0, r.output
    assert (out / "MODEL_CARD.md").read_text() == "# numbers a person measured\n"
    GnvcModel.from_pretrained(out)  # and the model itself is whole
    before = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    (out / "figures").mkdir()  # a file that is neither the model's nor a note: refused, nothing deleted
    (out / "figures" / "rd.png").write_bytes(b"png")
    r = CliRunner().invoke(cli, ["model", "pack", str(tiny_model_dir), "-o", str(out)])
    assert r.exit_code != 0 and "figures/rd.png" in str(r.exception)
    after = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    assert after == sorted([*before, "figures", "figures/rd.png"])
    home = tmp_path / "documents"  # a folder that is not a model directory is never replaced
    home.mkdir()
    (home / "thesis.tex").write_text("years of work")
    r = CliRunner().invoke(cli, ["model", "pack", str(tiny_model_dir), "-o", str(home)])
    assert r.exit_code != 0 and "not a gnvc model directory" in str(r.exception)
    assert [p.name for p in home.iterdir()] == ["thesis.tex"] and (home / "thesis.tex").read_text() == "years of work"


def test_half_pack_is_a_new_model_that_codes_like_the_one_in_memory(tmp_path, tiny_model):
    rounded = copy.deepcopy(tiny_model)
    assert rounded.round_weights_to_half() > 100
    assert rounded.weights_hash != tiny_model.weights_hash
    for p in rounded.parameters():
        assert torch.equal(p.to(torch.float16).to(torch.float32), p)
    out = tmp_path / "half"
    rounded.save_pretrained(out, compact=True)
    size = sum(p.stat().st_size for p in out.rglob("*.safetensors"))
    full = tmp_path / "full"
    tiny_model.save_pretrained(full)
    assert size < 0.6 * sum(p.stat().st_size for p in full.rglob("*.safetensors"))
    loaded = GnvcModel.from_pretrained(out)
    assert loaded.weights_hash == rounded.weights_hash
    video = random_video(5, 32, 48, seed=3)
    stream = encode_video(rounded, video, quality=2).data
    assert encode_video(loaded, video, quality=2).data == stream
    assert np.array_equal(decode_video(loaded, stream).frames, decode_video(rounded, stream).frames)
    with pytest.raises(BitstreamError, match="encoded with weights"):
        decode_video(tiny_model, stream)  # the unrounded model is another model


def _rewrite_metadata(path: Path, change) -> None:
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    change(meta, tensors)
    save_file(tensors, str(path), metadata=meta)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda m, t: m.__setitem__(LOGICAL_DTYPES_KEY, "[1]"), "must map tensor names"),
        (lambda m, t: m.__setitem__(LOGICAL_DTYPES_KEY, json.dumps({"log_gain": "float64"})), "must map tensor"),
        (lambda m, t: m.__setitem__(LOGICAL_DTYPES_KEY, json.dumps({"nothing": "int32"})), "does not hold"),
        # a float stored where an integer table is declared is no narrowing of it
        (
            lambda m, t: (
                t.__setitem__("context_to_y.0.int_weight", t["context_to_y.0.int_weight"].to(torch.float16)),
                m.__setitem__(LOGICAL_DTYPES_KEY, json.dumps({"context_to_y.0.int_weight": "int32"})),
            ),
            "not a narrowing of I32",
        ),
    ],
)
def test_a_bad_dtype_record_is_refused_before_loading(tmp_path, tiny_model, change, match):
    out = tmp_path / "m"
    tiny_model.save_pretrained(out, compact=True)
    _rewrite_metadata(out / CODEC_W, change)
    index = json.loads((out / "model_index.json").read_text())
    from gnvc.models.schema import file_digests

    index["files"] = file_digests(out)
    (out / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(WeightsError, match=match) as e:
        GnvcModel.from_pretrained(out)
    assert CODEC_W in str(e.value)


def test_without_weights_the_pipeline_model_wins_then_the_shipped_release(tmp_path, monkeypatch, tiny_model_dir):
    import shutil

    from gnvc.models import model_dir as md

    releases, models = tmp_path / "weights", tmp_path / "models"
    monkeypatch.setattr(md, "RELEASES_ROOT", releases)
    monkeypatch.setattr(md, "DEFAULT_MODELS_ROOT", models)
    with pytest.raises(WeightsError, match="no weights for profile 'tiny'"):
        md.resolve_weights(None)
    shutil.copytree(tiny_model_dir, releases / "v1")  # a shipped release (its profile: tiny)
    (releases / "broken").mkdir()
    (releases / "broken" / "model_index.json").write_text("{not json")  # never picked
    assert md.resolve_weights(None) == releases / "v1"
    assert md.resolve_weights(None, "tiny") == releases / "v1"
    with pytest.raises(WeightsError, match="no weights for profile 'base'"):
        md.resolve_weights(None, "base")
    shutil.copytree(tiny_model_dir, models / "tiny")  # what `dvc repro` trained wins over the release
    assert md.resolve_weights(None) == models / "tiny"
    # ... unless a stream names the release's weights: decoding picks the directory that encoded it
    index = json.loads((models / "tiny" / "model_index.json").read_text())
    index["weights_hash"] = "00" * 8  # another training of the same profile
    (models / "tiny" / "model_index.json").write_text(json.dumps(index))
    release_hash = bytes.fromhex(json.loads((releases / "v1" / "model_index.json").read_text())["weights_hash"])
    assert md.resolve_weights(None, "tiny", release_hash) == releases / "v1"
    assert md.resolve_weights(None, "tiny", bytes(8)) == models / "tiny"
    assert md.resolve_weights(None, "tiny", b"\x01" * 8) == models / "tiny"  # neither: the usual order
    assert md.resolve_weights(tiny_model_dir) == tiny_model_dir
    with pytest.raises(WeightsError, match="not a gnvc model directory"):
        md.resolve_weights(tmp_path)
