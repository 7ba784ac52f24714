"""Dependencies run one way: gnvc/codec (latent codec, entropy coding, container) imports nothing
from gnvc/models or gnvc/videocodec; gnvc/videocodec is what puts the VAE, codec and refiner together."""

from __future__ import annotations

import ast
from pathlib import Path

CODEC = Path(__file__).resolve().parents[2] / "gnvc" / "codec"


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
        bad = {m for m in gnvc if not (m.startswith("gnvc.codec") or m == "gnvc.errors")}
        assert not bad, f"{f.name} imports {sorted(bad)}"
