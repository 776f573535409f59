"""The layering of DESIGN.md, as an import contract (pyproject.toml [tool.importlinter])."""

import pkgutil
import subprocess
import sys
import tomllib
from pathlib import Path

import gateway

ROOT = Path(__file__).resolve().parent.parent


def contracts() -> list[dict]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def test_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Contracts: {len(contracts())} kept, 0 broken" in result.stdout


def test_the_contracts_name_every_core_module():
    core = {f"gateway.{m.name}" for m in pkgutil.iter_modules(gateway.__path__) if m.name not in ("sdk", "__main__")}
    for contract in contracts()[:2]:
        listed = {m for m in contract["forbidden_modules"] if m.startswith("gateway.")}
        assert listed == core, f"{contract['name']}: add the new module(s) {sorted(core - listed)} to pyproject.toml"
