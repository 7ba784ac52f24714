"""One model directory holds everything a profile needs: VAE, latent codec and refiner.

Layout (diffusers-style, each component its config plus safetensors weights)::

    DIR/model_index.json   {"_class_name": "GnvcModel", "gnvc_version": ..., "profile": {...}}
    DIR/vae/               AutoencoderKLWan.save_pretrained
    DIR/codec/             config.json + model.safetensors (entropy tables included)
    DIR/refiner/           Refiner.save_pretrained (when the profile has a refiner)

The weights hash written into every bitstream is computed from the tensors themselves (names,
dtypes, shapes, bytes), so a model hashes the same in memory, after saving and after loading,
and a decoder can refuse weights that differ from the encoder's.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gnvc import __version__
from gnvc.codec.latent_codec import ContextualLatentCodec
from gnvc.errors import WeightsError
from gnvc.models.profiles import load_profile, merge, validate_profile
from gnvc.models.schema import NOTE_SUFFIXES, file_digests, validate_model_dir
from gnvc.models.vae import VideoVAE
from gnvc.tensor_files import compact_file

INDEX_NAME = "model_index.json"
MODEL_PARTS = ("vae", "codec", "refiner")  # a model directory's own folders, beside INDEX_NAME
DEFAULT_MODELS_ROOT = Path("models")
OWN_WEIGHT_FILES = ("model.safetensors", "refiner.safetensors")  # loaded by gnvc.tensor_files.load_tensors
RELEASES_ROOT = Path(__file__).resolve().parents[2] / "weights"  # trained releases in the repository


def _hash_module(h: hashlib._Hash, name: str, module: nn.Module) -> None:
    h.update(name.encode())
    for key, value in sorted(module.state_dict().items()):
        t = value.detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")


class GnvcModel(nn.Module):
    """The VAE, the latent codec and (optionally) the refiner of one profile."""

    def __init__(
        self, profile: dict[str, Any], vae: VideoVAE, codec: ContextualLatentCodec, refiner: nn.Module | None = None
    ):
        super().__init__()
        validate_profile(profile)
        self.profile = profile
        self.vae = vae
        self.codec = codec
        self.refiner = refiner
        self._hash: bytes | None = None

    @property
    def name(self) -> str:
        return str(self.profile["name"])

    @property
    def coding(self) -> dict[str, Any]:
        return dict(self.profile.get("coding", {}))

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_profile(
        cls, profile: str | Path | dict[str, Any], *, seed: int = 0, overrides: dict[str, Any] | None = None
    ) -> GnvcModel:
        """An untrained model of a profile (entropy tables built, so it codes correctly)."""
        prof = profile if isinstance(profile, dict) else load_profile(profile)
        prof = merge(prof, overrides)
        validate_profile(prof)
        torch.manual_seed(seed)
        vae = VideoVAE.from_config(prof["vae"])
        codec = ContextualLatentCodec.from_config(prof["codec"])
        codec.update(force=True)
        refiner = None
        if prof.get("refiner"):
            from gnvc.refiner import Refiner

            refiner = Refiner.from_config(prof["refiner"])
        return cls(prof, vae, codec, refiner).eval()

    @classmethod
    def from_pretrained(cls, path: str | Path) -> GnvcModel:
        """Load a model directory, validated first (:func:`gnvc.models.schema.validate_model_dir`):
        no pickle, every config checked, tensor headers matched against the configs, and after
        loading the tensors' hash compared with the index's ``weights_hash``."""
        path = Path(path)
        spec = validate_model_dir(path)
        vae = VideoVAE.from_pretrained(path / "vae")
        codec = ContextualLatentCodec.from_pretrained(path / "codec", config=spec.codec)
        refiner = None
        if spec.refiner is not None:
            from gnvc.refiner import Refiner

            refiner = Refiner.from_pretrained(path / "refiner")
        model = cls(spec.profile, vae, codec, refiner).eval()
        if model.weights_hash.hex() != spec.weights_hash:
            raise WeightsError(
                f"{path / INDEX_NAME}: the loaded tensors hash to {model.weights_hash.hex()}, not the recorded "
                f"weights_hash {spec.weights_hash} (the weights were changed after saving)"
            )
        return model

    def round_weights_to_half(self) -> int:
        """Round every float32 parameter to its nearest float16 value (kept float32 in memory).

        Why: the shipped release is stored compactly (:func:`gnvc.tensor_files.compact_file`), which
        halves only what float16 holds exactly. This is the lossy step, done once and explicitly: the
        result is a new model (new weights hash) whose entropy tables and integer decoding networks
        are rebuilt from the rounded weights, so it is exactly what gets saved, loaded and measured.
        A tensor that float16 cannot hold (overflow) stays float32. Returns how many were rounded.
        """
        rounded = 0
        with torch.no_grad():
            for p in self.parameters():
                if p.dtype != torch.float32:
                    continue
                half = p.to(torch.float16)
                if bool(torch.isfinite(half).all()):
                    p.copy_(half.to(torch.float32))
                    rounded += 1
        self.codec.update(force=True)
        self.invalidate_hash()
        return rounded

    def save_pretrained(self, path: str | Path, *, compact: bool = False) -> None:
        """Write the directory atomically: a crash never leaves a half-written model under ``path``.

        An existing ``path`` must be empty or a model directory: its model is replaced and its
        notes (a MODEL_CARD.md) are kept; a folder holding anything else is refused, never deleted.

        ``compact``: store each tensor in the narrowest dtype that holds it exactly
        (:mod:`gnvc.tensor_files`); loading gives back the same tensors and weights hash."""
        path = Path(path)
        notes = _notes_to_keep(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not self.codec.tables_ready():
            self.codec.update(force=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            self.vae.save_pretrained(tmp / "vae")
            self.codec.save_pretrained(tmp / "codec")
            if self.refiner is not None:
                self.refiner.save_pretrained(tmp / "refiner")
            _drop_load_paths(tmp)
            if compact:
                for file in sorted(tmp.rglob("*.safetensors")):
                    # diffusers' loader widens floats itself but would keep a narrowed integer narrow
                    compact_file(file, integers=file.name in OWN_WEIGHT_FILES)
            index = {
                "_class_name": "GnvcModel",
                "gnvc_version": __version__,
                "profile": self.profile,
                "weights_hash": self.weights_hash.hex(),
                # Per-file SHA-256: a tampered file is named before anything is loaded from it.
                "files": file_digests(tmp),
            }
            (tmp / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
            for rel in notes:  # copied, so a crash loses nothing
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path / rel, tmp / rel)
            if path.exists():
                shutil.rmtree(path)
            tmp.rename(path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    # ------------------------------------------------------------------ identity
    @property
    def weights_hash(self) -> bytes:
        """8 bytes of SHA-256 over the profile name and every component's tensors."""
        if self._hash is None:
            h = hashlib.sha256(self.name.encode())
            _hash_module(h, "vae", self.vae)
            h.update(self.vae.mean.numpy().tobytes() + self.vae.std.numpy().tobytes())
            _hash_module(h, "codec", self.codec)
            if self.refiner is not None:
                _hash_module(h, "refiner", self.refiner)
            self._hash = h.digest()[:8]
        return self._hash

    def invalidate_hash(self) -> None:
        """Call after changing weights (training) so the next bitstream carries the new hash."""
        self._hash = None


def _drop_load_paths(root: Path) -> None:
    """Remove ``_name_or_path`` from the components' configs: diffusers records there the folder a
    model was loaded from, so the same model saved from two places would differ (a local build
    path in a shipped release, and a needless new file version each time it is repacked)."""
    for cfg in sorted(root.rglob("config.json")):
        data = json.loads(cfg.read_text())
        if isinstance(data, dict) and data.pop("_name_or_path", None) is not None:
            cfg.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")  # diffusers' own layout


def shipped_releases() -> dict[str, Path]:
    """``{profile: directory}`` of the trained releases in the repository's ``weights/`` folder."""
    out: dict[str, Path] = {}
    if RELEASES_ROOT.is_dir():
        for index in sorted(RELEASES_ROOT.glob(f"*/{INDEX_NAME}")):
            try:
                out.setdefault(str(json.loads(index.read_text())["profile"]["name"]), index.parent)
            except (OSError, ValueError, KeyError, TypeError):
                continue  # not a readable model directory: never picked by default
    return out


def _recorded_hash(path: Path) -> str | None:
    try:
        return str(json.loads((path / INDEX_NAME).read_text())["weights_hash"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def resolve_weights(weights: str | Path | None, profile: str | None = None, weights_hash: bytes | None = None) -> Path:
    """The model directory to use: ``weights`` if given; else ``models/<profile>/`` (what the
    pipeline trained); else the shipped release of that profile (``weights/<name>/``); with no
    profile, ``models/tiny/`` or else the shipped release. A clear error when there is none.

    ``weights_hash`` (a stream's): of those two, the one that encoded it wins, so a stream coded
    with the shipped release decodes without ``--weights`` beside a ``models/<profile>/`` of one's own."""
    if weights is not None:
        path = Path(weights)
        if not (path / INDEX_NAME).is_file():
            raise WeightsError(f"{path}: not a gnvc model directory ({INDEX_NAME} missing)")
        return path
    name = profile or "tiny"
    path = DEFAULT_MODELS_ROOT / name
    releases = shipped_releases()
    if weights_hash is not None:
        for candidate in (path, releases.get(name)):
            if candidate is not None and _recorded_hash(candidate) == weights_hash.hex():
                return candidate
    if (path / INDEX_NAME).is_file():
        return path
    if profile in releases:
        return releases[profile]
    if profile is None and releases:
        return next(iter(releases.values()))
    raise WeightsError(
        f"no weights for profile {name!r}: {path}/ does not exist and no release of it ships in {RELEASES_ROOT}/; "
        f"pass --weights DIR, train it with `dvc repro`, or create an untrained one with "
        f"`gnvc model init --profile {name} -o DIR`"
    )


def load_model(weights: str | Path | None, profile: str | None = None, weights_hash: bytes | None = None) -> GnvcModel:
    """Load the model directory that :func:`resolve_weights` picks, checking its profile."""
    model = GnvcModel.from_pretrained(resolve_weights(weights, profile, weights_hash))
    if profile is not None and model.name != profile:
        raise WeightsError(f"the weights in {weights} are of profile {model.name!r}, not {profile!r}")
    return model


def _notes_to_keep(path: Path) -> list[str]:
    """The notes (``.md``/``.txt``) of an existing model directory at ``path``, which a new save
    keeps; raises rather than replace a folder that is not a model directory or holds other files.
    """
    if not path.exists():
        return []
    if not path.is_dir() or (any(path.iterdir()) and not (path / INDEX_NAME).is_file()):
        raise WeightsError(f"{path} exists and is not a gnvc model directory: refusing to replace it")
    notes, foreign = [], []
    for f in sorted(p for p in path.rglob("*") if not p.is_dir()):
        rel = f.relative_to(path).as_posix()
        if f.suffix in NOTE_SUFFIXES:
            notes.append(rel)
        elif rel != INDEX_NAME and rel.split("/")[0] not in MODEL_PARTS:
            foreign.append(rel)
    if foreign:
        raise WeightsError(
            f"{path} holds files that are not part of its model ({', '.join(foreign[:3])}): "
            "move them elsewhere, then save again"
        )
    return notes
