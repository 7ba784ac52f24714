"""Dependencies run one way: gnvc/codec (latent codec, entropy coding, container) imports nothing
from gnvc/models or gnvc/videocodec; gnvc/videocodec is what puts the VAE, codec and refiner together.
Leaf modules that import nothing from gnvc (errors, safetensors storage) are shared by all."""

from __future__ import annotations

import ast
from pathlib import Path

CODEC = Path(__file__).resolve().parents[2] / "gnvc" / "codec"
LEAVES = {"gnvc.errors", "gnvc.tensor_files"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def test_codec_package_imports_no_models():
    files = sorted(CODEC.glob("*.py"))
    assert files
    for f in files:
        gnvc = {m for m in _imports(f) if m.startswith("gnvc")}
        bad = {m for m in gnvc if not (m.startswith("gnvc.codec") or m in LEAVES)}
        assert not bad, f"{f.name} imports {sorted(bad)}"


def test_leaf_modules_import_nothing_from_gnvc():
    for name in sorted(LEAVES):
        path = CODEC.parent / (name.split(".", 1)[1] + ".py")
        assert not {m for m in _imports(path) if m.startswith("gnvc")}, f"{path.name} is no longer a leaf"
