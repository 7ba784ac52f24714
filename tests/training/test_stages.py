"""The four training stages end to end on a tiny synthetic dataset: each writes a complete model
directory that the next one reads, and the last one codes videos."""

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

from gnvc.codec.container import read_stream
from gnvc.errors import ConfigError, InputError
from gnvc.io.video import Video
from gnvc.models.model_dir import GnvcModel
from gnvc.videocodec import decode_video, encode_video

FAST = {"progress": False, "log_every": 1, "checkpoint_every": 1}


def _params(tmp: Path, profile_file: Path) -> dict[str, Any]:
    return {
        "profile": str(profile_file),
        "seed": 0,
        "vae": {
            **FAST, "output": str(tmp / "build/vae"), "run_dir": str(tmp / "runs/vae"), "log_dir": str(tmp / "log/vae"),
            "clips_manifest": str(tmp / "data/clips/manifest.json"), "steps": 3, "image_steps": 1,
            "image_batch_size": 2, "batch_size": 2, "frames": 5, "crop": [32, 32], "lr": 4e-4,
            "logvar_init": -6.0, "lpips_weight": 0.1, "stats_batches": 2,
        },
        "prior": {
            **FAST, "input": str(tmp / "build/vae"), "output": str(tmp / "build/prior"),
            "run_dir": str(tmp / "runs/prior"), "log_dir": str(tmp / "log/prior"),
            "latents_manifest": str(tmp / "data/latents/manifest.json"), "steps": 3, "batch_size": 2, "t_min": 0.4,
        },
        "stage1": {
            **FAST, "input": str(tmp / "build/prior"), "output": str(tmp / "build/stage1"),
            "run_dir": str(tmp / "runs/stage1"), "log_dir": str(tmp / "log/stage1"),
            "latents_manifest": str(tmp / "data/latents/manifest.json"), "steps": 2, "batch_size": 2,
            "lambdas": [0.5, 2.0, 8.0], "codec_mse_weight": 1.0,
        },
        "stage2": {
            **FAST, "input": str(tmp / "build/stage1"), "output": str(tmp / "models/test"),
            "run_dir": str(tmp / "runs/stage2"), "log_dir": str(tmp / "log/stage2"),
            "clips_manifest": str(tmp / "data/clips/manifest.json"), "steps": 2, "batch_size": 1, "frames": 5,
            "crop": [32, 32], "lambdas": [0.5, 2.0, 8.0],
        },
    }  # fmt: skip


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """Data, then vae → latents → prior → stage1 → stage2, once for the module."""
    from gnvc.data.latents import encode_latents
    from gnvc.data.prepare import prepare_dataset
    from gnvc.stages import prior, stage1, stage2, vae

    from .conftest import TEST_PROFILE

    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("pipeline")
    profile_file = tmp / "test_profile.yaml"
    profile_file.write_text(yaml.safe_dump(TEST_PROFILE))
    prepare_dataset(
        {
            "out_dir": str(tmp / "data/clips"), "sources": ["synthetic"], "frames": 5,
            "train": {"size": [32, 32], "synthetic_clips": 4}, "val": {"size": [32, 32], "synthetic_clips": 1},
        },
        progress=False,
    )  # fmt: skip
    params = _params(tmp, profile_file)
    metrics = {"vae": vae.run(params)}
    encode_latents(
        {"clips_manifest": str(tmp / "data/clips/manifest.json"), "vae": str(tmp / "build/vae"),
         "out_dir": str(tmp / "data/latents"), "batch_size": 2, "threads": 1},
        profile="tiny", progress=False,
    )  # fmt: skip
    metrics["prior"] = prior.run(params)
    metrics["stage1"] = stage1.run(params)
    metrics["stage2"] = stage2.run(params)
    return tmp, params, metrics


def test_every_stage_writes_a_complete_model_dir(pipeline: tuple[Path, dict[str, Any], dict[str, Any]]) -> None:
    tmp, _, metrics = pipeline
    hashes = set()
    for stage, out in (("vae", "build/vae"), ("prior", "build/prior"), ("stage1", "build/stage1"),
                       ("stage2", "models/test")):  # fmt: skip
        model = GnvcModel.from_pretrained(tmp / out)
        assert model.refiner is not None and model.refiner.adapter is not None
        assert model.weights_hash.hex() == metrics[stage]["weights_hash"]
        assert model.codec.tables_ready()
        hashes.add(model.weights_hash)
        assert metrics[stage]["steps"] >= 2 and np.isfinite(metrics[stage]["train_loss"])
        log = tmp / "log" / stage
        assert (log / "metrics.tsv").is_file() and (log / "loss.png").is_file()
        assert json.loads((log / "summary.json").read_text())["step"] == metrics[stage]["steps"]
    assert len(hashes) == 4  # each stage changed the weights
    # The VAE stage stored its latents' statistics (normalised latents for everything after it).
    vae = GnvcModel.from_pretrained(tmp / "build/vae").vae
    assert not torch.allclose(vae.std, torch.ones_like(vae.std))


def test_stage1_froze_the_dit_and_trained_codec_and_adapter(
    pipeline: tuple[Path, dict[str, Any], dict[str, Any]],
) -> None:
    tmp, _, _ = pipeline
    prior, s1 = GnvcModel.from_pretrained(tmp / "build/prior"), GnvcModel.from_pretrained(tmp / "build/stage1")
    for k, v in prior.refiner.transformer.state_dict().items():
        assert torch.equal(v, s1.refiner.transformer.state_dict()[k]), k
    assert any(p.abs().sum() > 0 for p in s1.refiner.adapter.block_proj.parameters())
    assert all(p.abs().sum() == 0 for p in prior.refiner.adapter.block_proj.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(prior.codec.parameters(), s1.codec.parameters(), strict=True))
    assert torch.equal(prior.vae.vae.decoder.conv_out.weight, s1.vae.vae.decoder.conv_out.weight)
    # The quantiles were converged before the entropy tables were built (fit_quantiles).
    assert float(s1.codec.aux_loss()) < 1.0 < float(prior.codec.aux_loss())


def test_stage1_codec_warmup_trains_the_codec_alone_then_the_adapter(
    pipeline: tuple[Path, dict[str, Any], dict[str, Any]],
) -> None:
    """``codec_warmup_steps``: the refiner is not run (its adapter stays zero) until the switch."""
    from gnvc.stages import stage1

    tmp, params, _ = pipeline
    warm = copy.deepcopy(params)
    warm["stage1"].update(codec_warmup_steps=2, output=str(tmp / "build/stage1_warm"), run_dir=str(tmp / "runs/s1w"),
                          log_dir=str(tmp / "log/s1w"))  # fmt: skip
    stage1.run(warm)
    prior, s1 = GnvcModel.from_pretrained(tmp / "build/prior"), GnvcModel.from_pretrained(tmp / "build/stage1_warm")
    assert all(p.abs().sum() == 0 for p in s1.refiner.adapter.block_proj.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(prior.codec.parameters(), s1.codec.parameters(), strict=True))
    assert "mse_refined" not in _tsv(tmp / "log/s1w/metrics.tsv")[-1]  # the refiner's loss was never computed

    warm["stage1"]["steps"] = 3  # resumes from step 2, then the joint loss
    assert stage1.run(warm)["resumed_from"] == 2
    s1 = GnvcModel.from_pretrained(tmp / "build/stage1_warm")
    assert any(p.abs().sum() > 0 for p in s1.refiner.adapter.block_proj.parameters())
    rows = _tsv(tmp / "log/s1w/metrics.tsv")
    assert [r["step"] for r in rows] == ["1", "2", "3"] and rows[2]["mse_refined"] != "" and "cfm" in rows[2]


def _tsv(path: Path) -> list[dict[str, str]]:
    head, *lines = path.read_text().splitlines()
    return [dict(zip(head.split("\t"), line.split("\t"), strict=False)) for line in lines]


def test_stage2_can_train_the_vae_decoder_alone(pipeline: tuple[Path, dict[str, Any], dict[str, Any]]) -> None:
    """``trainable: [vae_decoder]``: the decoder learns; encoder, codec and refiner are those of
    Stage I bit for bit, so the streams' symbols (and the P-chain) cannot change."""
    from gnvc.stages import stage2

    tmp, params, _ = pipeline
    dec = copy.deepcopy(params)
    dec["stage2"].update(
        trainable=["vae_decoder"], refine_prob=0.5, augment={"colors": True, "hflip": True}, temporal_weight=1.0,
        output=str(tmp / "models/decoder"), run_dir=str(tmp / "runs/s2d"), log_dir=str(tmp / "log/s2d"),
    )  # fmt: skip
    metrics = stage2.run(dec)
    s1, out = GnvcModel.from_pretrained(tmp / "build/stage1"), GnvcModel.from_pretrained(tmp / "models/decoder")
    for name in ("codec", "refiner"):
        a, b = getattr(s1, name).state_dict(), getattr(out, name).state_dict()
        assert all(torch.equal(v, b[k]) for k, v in a.items()), name
    enc_a, enc_b = s1.vae.vae.encoder.state_dict(), out.vae.vae.encoder.state_dict()
    assert all(torch.equal(v, enc_b[k]) for k, v in enc_a.items())
    assert not torch.equal(s1.vae.vae.decoder.conv_out.weight, out.vae.vae.decoder.conv_out.weight)
    assert metrics["weights_hash"] != s1.weights_hash.hex() and np.isfinite(metrics["train_lpips"])
    assert np.isfinite(metrics["train_mse_temporal"])
    frames = np.random.default_rng(1).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    video = Video(frames, Fraction(25))
    sym_a = encode_video(s1, video, 1, seed=3).data
    sym_b = encode_video(out, video, 1, seed=3).data
    (_, rec_a, _), (_, rec_b, _) = read_stream(sym_a), read_stream(sym_b)
    assert rec_a == rec_b  # the same symbols (and latent CRCs); only the header's weights hash differs
    assert decode_video(out, sym_b).frames.shape == frames.shape
    with pytest.raises(ConfigError, match="trainable"):
        stage2.run({**dec, "stage2": {**dec["stage2"], "trainable": ["encoder"]}})
    with pytest.raises(ConfigError, match="temporal_weight"):
        stage2.run({**dec, "stage2": {**dec["stage2"], "trainable": ["codec"]}})


def test_final_model_codes_video(pipeline: tuple[Path, dict[str, Any], dict[str, Any]]) -> None:
    tmp, _, _ = pipeline
    model = GnvcModel.from_pretrained(tmp / "models/test")
    frames = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    data = encode_video(model, Video(frames, Fraction(25)), 1, seed=3).data
    a, b = decode_video(model, data).frames, decode_video(model, data).frames
    assert a.shape == frames.shape and np.array_equal(a, b)


def test_rerun_resumes_instead_of_retraining(pipeline: tuple[Path, dict[str, Any], dict[str, Any]]) -> None:
    from gnvc.stages import stage1

    tmp, params, metrics = pipeline
    again = stage1.run(params)  # the final checkpoint is there: nothing left to train
    assert again["weights_hash"] == metrics["stage1"]["weights_hash"]
    changed = copy.deepcopy(params)
    changed["stage1"]["lr"] = 5e-4  # another config: its checkpoints are not reused
    changed["stage1"]["output"] = str(tmp / "build/stage1_b")
    assert stage1.run(changed)["weights_hash"] != metrics["stage1"]["weights_hash"]


def test_a_stage_resumes_only_on_top_of_the_model_it_started_from(
    pipeline: tuple[Path, dict[str, Any], dict[str, Any]],
) -> None:
    """A previous stage retrained in place (same path and section, other weights) makes the next
    stage train again: its finished checkpoint belongs to the old input, as a prior trained on one
    VAE's latents does not fit a retrained VAE."""
    import shutil

    from gnvc.stages import stage1

    tmp, params, _ = pipeline
    swap = copy.deepcopy(params)
    swap["stage1"].update(
        input=str(tmp / "build/prior_swap"), output=str(tmp / "build/stage1_swap"),
        run_dir=str(tmp / "runs/stage1_swap"), log_dir=str(tmp / "log/stage1_swap"),
    )  # fmt: skip
    shutil.copytree(tmp / "build/prior", tmp / "build/prior_swap")
    first = stage1.run(swap)
    assert first["resumed_from"] == 0
    assert stage1.run(swap)["resumed_from"] == first["steps"]  # same input: resumed, finished
    shutil.rmtree(tmp / "build/prior_swap")
    shutil.copytree(tmp / "build/vae", tmp / "build/prior_swap")  # same VAE, another DiT
    again = stage1.run(swap)
    assert again["resumed_from"] == 0 and again["steps"] == first["steps"]


def test_import_profiles_need_a_path(tmp_path: Path) -> None:
    from gnvc.stages import prior, vae

    params = {"profile": "wan2.1", "vae": {"import_profiles": ["wan2.1"], "import_from": None}}
    with pytest.raises(ConfigError, match="vae.import_from"):
        vae.run(params)
    params["vae"]["import_from"] = str(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="no AutoencoderKLWan"):
        vae.run(params)
    with pytest.raises(Exception, match="previous stage"):
        prior.run({"profile": "wan2.1", "prior": {"input": str(tmp_path / "missing")}})


def test_vae_import(tmp_path: Path, test_profile: dict[str, Any]) -> None:
    """A profile listed in import_profiles takes the user's VAE as it is (here: a saved test VAE)."""
    from gnvc.stages import vae as vae_stage

    source = GnvcModel.from_profile(test_profile, seed=5)
    source.vae.save_pretrained(tmp_path / "user" / "vae")
    profile_file = tmp_path / "p.yaml"
    profile_file.write_text(yaml.safe_dump(test_profile))
    params = {
        "profile": str(profile_file),
        "vae": {"import_profiles": [str(profile_file)], "import_from": str(tmp_path / "user"),
                "output": str(tmp_path / "out")},
    }  # fmt: skip
    metrics = vae_stage.run(params)
    model = GnvcModel.from_pretrained(tmp_path / "out")
    for k, v in source.vae.state_dict().items():
        assert torch.equal(v, model.vae.state_dict()[k])
    assert metrics["imported_from"] == str(tmp_path / "user")


def test_evaluate_stage_reports_on_held_out_clips(pipeline: tuple[Path, dict[str, Any], dict[str, Any]]) -> None:
    """The evaluate stage codes the val clips with the trained model (refinement on and off at the same
    bitstreams) and an anchor, writes the report, and returns the headline numbers as metrics."""
    from gnvc.stages import evaluate
    from gnvc.stages.runner import flatten_metrics

    tmp, _, _ = pipeline
    params = {
        "profile": "test",
        "evaluate": {
            "weights": str(tmp / "models/{profile}"), "clips_manifest": str(tmp / "data/clips/manifest.json"),
            "split": "val", "max_clips": 1, "out_dir": str(tmp / "reports/evaluate"), "qualities": [0, 2],
            "refinement": "both", "anchors": ["x264"], "qp": {"x264": [40, 51]},
            "metrics": ["psnr_rgb", "lpips_alex", "dists"], "visuals": True, "workers": 2,
        },
    }  # fmt: skip
    result = evaluate.run(params)  # two spawned worker processes, as `gnvc eval --workers 2`
    report = json.loads((tmp / "reports/evaluate/report.json").read_text())
    assert set(report["methods"]) == {"gnvc", "gnvc-noref", "x264"}
    (clip,) = report["points"]
    assert [p["label"] for p in report["points"][clip]["gnvc"]] == ["q0", "q2"]
    ref = result["refinement"]
    assert ref["pairs"] == 2 and set(ref) >= {"lpips_alex", "dists"}
    assert ref["lpips_alex"]["delta"] == pytest.approx(ref["lpips_alex"]["refined"] - ref["lpips_alex"]["unrefined"])
    assert 0 < result["gnvc_bpp_min"] < result["gnvc_bpp_max"]
    assert (tmp / "reports/evaluate/report.md").is_file()
    assert "refinement.lpips_alex.delta" in flatten_metrics(result)
    with pytest.raises(ConfigError, match="not a model directory"):
        evaluate.run({**params, "evaluate": {**params["evaluate"], "weights": str(tmp / "nowhere")}})


def test_held_out_videos_keep_only_the_named_sources(pipeline: tuple[Path, dict[str, Any], dict[str, Any]]) -> None:
    from gnvc.stages.evaluate import held_out_videos

    tmp, _, _ = pipeline
    manifest = tmp / "data/clips/manifest.json"
    every = held_out_videos(manifest, "val", None)
    source = next(iter(every)).split("/", 1)[0]
    kept = held_out_videos(manifest, "val", None, sources=[source])
    assert kept and set(kept) == {k for k in every if k.startswith(source + "/")}
    with pytest.raises(InputError, match="no 'val' clips of the sources"):
        held_out_videos(manifest, "val", None, sources=["no-such-source"])


def test_latent_statistics_do_not_depend_on_the_thread_count(test_profile: dict[str, Any]) -> None:
    """The VAE's latent statistics enter the model's config and weights hash: a rebuild with another
    OMP_NUM_THREADS must give the same values (it did not: the encoder's reductions round per thread)."""
    from gnvc.models.model_dir import GnvcModel
    from gnvc.stages.vae import latent_statistics

    model = GnvcModel.from_profile(test_profile, seed=0)
    batches = [torch.randn(2, 3, 5, 48, 48, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    before = torch.get_num_threads()
    results = []
    for n in (1, 2, 3):
        torch.set_num_threads(n)
        results.append(latent_statistics(model.vae, batches))
        assert torch.get_num_threads() == n  # restored
    torch.set_num_threads(before)
    for mean, std in results[1:]:
        assert torch.equal(mean, results[0][0]) and torch.equal(std, results[0][1])
