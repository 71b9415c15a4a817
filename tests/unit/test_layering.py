"""The layout shows the architecture: the kernel imports neither application, and the two
applications do not import each other. Only the front door (ibex/cli.py and the demo modules
ibex/demo.py, ibex/demofed.py) may import all three (DESIGN.md section 2)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FRONT_DOOR = {"ibex/cli.py", "ibex/demo.py", "ibex/demofed.py"}
FORBIDDEN = {
    "ibex": ("broker", "connectors"),
    "broker": ("connectors",),
    "connectors": ("broker",),
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


FILES = sorted(p for pkg in FORBIDDEN for p in (ROOT / pkg).rglob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_layering(path: Path) -> None:
    rel = path.relative_to(ROOT).as_posix()
    if rel in FRONT_DOOR:
        return
    package = rel.split("/")[0]
    bad = _imports(path) & set(FORBIDDEN[package])
    assert not bad, f"{rel} imports {sorted(bad)}"


def test_front_door_modules_exist() -> None:
    for rel in FRONT_DOOR:
        assert (ROOT / rel).is_file(), rel
