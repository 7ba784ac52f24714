"""Profiles: the configs of every component, as data (``gnvc/profiles/<name>.yaml``).

Model code never branches on a profile's name; a profile only chooses config values. A model
directory stores the full profile it was built from, so a directory is self-describing.
"""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from gnvc.errors import ConfigError

REQUIRED_SECTIONS = ("vae", "codec", "coding")


def available_profiles() -> list[str]:
    """Names of the profiles that ship with the package."""
    files = resources.files("gnvc.profiles").iterdir()
    return sorted(f.name[: -len(".yaml")] for f in files if f.name.endswith(".yaml"))


def load_profile(name_or_path: str | Path) -> dict[str, Any]:
    """A shipped profile by name (``tiny``), or a YAML file path, as a validated dict."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.exists():
        text = path.read_text()
    else:
        name = str(name_or_path)
        if name not in available_profiles():
            raise ConfigError(f"unknown profile {name!r}; available: {', '.join(available_profiles())}")
        text = resources.files("gnvc.profiles").joinpath(f"{name}.yaml").read_text()
    profile = yaml.safe_load(text)
    validate_profile(profile)
    return profile


def validate_profile(profile: Any) -> None:
    if not isinstance(profile, dict) or "name" not in profile:
        raise ConfigError("a profile must be a mapping with a 'name'")
    missing = [s for s in REQUIRED_SECTIONS if s not in profile]
    if missing:
        raise ConfigError(f"profile {profile['name']!r} lacks section(s): {', '.join(missing)}")
    coding = profile["coding"]
    if "gop_frames" in coding:
        raise ConfigError("coding.gop_frames belongs to format version 1; use coding.intra_period (latent frames)")
    period = coding.get("intra_period", 0)
    if not isinstance(period, int) or period < 0:
        raise ConfigError(f"coding.intra_period must be an integer ≥ 0 (0: one P-chain), got {period!r}")


def merge(profile: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """A deep copy of ``profile`` with nested ``overrides`` applied (for tests and experiments)."""
    out = copy.deepcopy(profile)
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
