"""The layers of the code, held by the import contracts in pyproject.toml that `make test` runs (`lint-imports`).

The tree keeps them; an import against them, at module level or inside a function, fails naming the import; and
the contract itself is the documented layer order (weakening it fails here).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from django.conf import settings

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
# Top to bottom: an app imports only the apps below it; the two of one layer do not import each other.
LAYERS = ["agents", "backtesting", "training", "runtime", "checkpoints | marketdata", "operations"]
APPS = [app.strip() for layer in LAYERS for app in layer.split("|")]


def lint(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--no-logo", "--no-cache"], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def contracts() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]


def test_the_tree_keeps_every_contract():
    linted = lint(ROOT)
    assert linted.returncode == 0, linted.stdout + linted.stderr
    assert "0 broken" in linted.stdout


def test_the_layers_contract_is_the_documented_order():
    layers = [contract["layers"] for contract in contracts()["contracts"] if contract["type"] == "layers"]
    assert layers == [LAYERS]
    assert " → ".join(LAYERS) in (ROOT / "docs" / "architecture.md").read_text()


def test_every_app_of_the_project_is_in_a_layer():
    project_apps = [app for app in settings.INSTALLED_APPS if (ROOT / app / "apps.py").exists()]
    assert sorted(contracts()["root_packages"]) == sorted(project_apps) == sorted(APPS)


@pytest.fixture
def tree(tmp_path) -> Path:
    """A copy of the apps and the contracts, to break."""
    for app in APPS:
        shutil.copytree(ROOT / app, tmp_path / app, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    ("module", "added", "imported", "broken"),
    [
        # the core reaching up, as it did for the runtime before it had an app of its own
        ("operations/selectors.py", ["from runtime.tasks import run_operation"], "runtime.tasks",
         "operations is not allowed to import runtime"),
        # the checkpoint store and market data are siblings: neither imports the other
        ("checkpoints/services.py", ["import marketdata.series"], "marketdata.series",
         "checkpoints is not allowed to import marketdata"),
        # an import inside a function is no way around it
        ("training/runner.py", ["def _design():", "    from agents.design import propose", "    return propose"],
         "agents.design", "training is not allowed to import agents"),
        # another app's views
        ("agents/session.py", ["from training.api import TrainingCreateView"], "training.api",
         "Illegal imports of protected package training.api"),
    ],
)
def test_an_import_against_the_contracts_fails_naming_it(tree, module, added, imported, broken):
    source = tree / module
    lines = [*source.read_text().splitlines(), "", "", *added]
    source.write_text("\n".join(lines) + "\n")
    line = len(lines) - len(added) + 1 + next(i for i, text in enumerate(added) if "import" in text)
    importer = module.removesuffix(".py").replace("/", ".")

    linted = lint(tree)

    assert linted.returncode == 1, linted.stdout
    assert broken in linted.stdout
    assert f"{importer} -> {imported} (l.{line})" in linted.stdout
