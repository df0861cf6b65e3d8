"""The package's layers (pyproject.toml, [tool.importlinter]): each stage imports only the stages below it."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib

from catdog.config import PROJECT_ROOT

# import-linter's own command, in a fresh interpreter: it reads this checkout's src/, whatever the tests imported.
LINT = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True, no_logo=True))"


def test_every_import_contract_holds() -> None:
    source = str(PROJECT_ROOT / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(
        [sys.executable, "-c", LINT], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_the_stages_are_layered_without_exceptions() -> None:
    """A stage that needs a higher one (as ``train --ship`` needed the ship step) is run from the command line."""
    contracts = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    layered = [c for c in contracts["contracts"] if c["type"] == "layers"]
    assert layered
    for contract in layered:
        assert not contract.get("ignore_imports"), f"{contract['name']!r} ignores {contract['ignore_imports']}"
