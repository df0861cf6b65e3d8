"""pyproject.toml declares what the code imports, in ranges that hold the pinned requirements*.txt sets."""

from __future__ import annotations

import ast
import sys
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from catdog.config import PROJECT_ROOT

PROJECT = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
EXTRAS = PROJECT["optional-dependencies"]
# Where each pinned file's packages must be declared: serving's in the base dependencies.
LOCK_FILES = {
    "requirements-serve.txt": ["base"],
    "requirements.txt": ["base", "train", "test", "dev"],
    "requirements-bulk.txt": ["bulk"],
}
# Import names that differ from the distribution's name.
DISTRIBUTIONS = {
    "PIL": "pillow",
    "yaml": "PyYAML",
    "ai_edge_litert": "ai-edge-litert",
    "prometheus_client": "prometheus-client",
    "pydantic_settings": "pydantic-settings",
}


def declared(group: str) -> list[Requirement]:
    """The requirements of the base dependencies or of one extra (not following ``catdog[...]``)."""
    lines = PROJECT["dependencies"] if group == "base" else EXTRAS[group]
    return [req for req in map(Requirement, lines) if canonicalize_name(req.name) != "catdog"]


def pins(lock_file: str) -> list[Requirement]:
    text = (PROJECT_ROOT / lock_file).read_text(encoding="utf-8")
    lines = (line.split("#")[0].strip() for line in text.splitlines())
    return [Requirement(line) for line in lines if line]


@pytest.mark.parametrize("lock_file", list(LOCK_FILES))
def test_every_pin_is_declared_in_a_range_that_holds_it(lock_file: str) -> None:
    ranges = [req for group in LOCK_FILES[lock_file] for req in declared(group)]
    for pin in pins(lock_file):
        (version,) = [spec.version for spec in pin.specifier if spec.operator == "=="]
        matches = [req for req in ranges if canonicalize_name(req.name) == canonicalize_name(pin.name)]
        assert matches, (
            f"{lock_file}: {pin.name} is not declared in pyproject.toml ({', '.join(LOCK_FILES[lock_file])})"
        )
        assert any(req.specifier.contains(version) and req.marker == pin.marker for req in matches), (
            f"{lock_file}: {pin} is outside pyproject.toml's {[str(req) for req in matches]}"
        )


# Libraries whose private parts catdog uses (tests/test_internals.py checks them): a minor release may change those.
INTERNALS_USED = ("gunicorn", "pydantic-settings")


@pytest.mark.parametrize("name", INTERNALS_USED)
def test_a_library_whose_internals_we_use_is_held_to_its_pinned_minor_release(name: str) -> None:
    (pin,) = [pin for pin in pins("requirements-serve.txt") if canonicalize_name(pin.name) == name]
    (version,) = [Version(spec.version) for spec in pin.specifier]
    (declared_range,) = [req.specifier for req in declared("base") if canonicalize_name(req.name) == name]
    assert declared_range.contains(str(version))
    assert not declared_range.contains(f"{version.major}.{version.minor + 1}.0"), (
        f"pyproject.toml lets {name} move past {version.major}.{version.minor}: {declared_range}"
    )


def imported_packages() -> set[str]:
    """Top-level names of the third-party modules that src/catdog imports, lazily or not."""
    names = set()
    for path in (PROJECT_ROOT / "src" / "catdog").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {name for name in names if name not in sys.stdlib_module_names and name != "catdog"}


def test_every_third_party_import_is_declared() -> None:
    every = {canonicalize_name(req.name) for group in ["base", *EXTRAS] for req in declared(group)}
    missing = {name for name in imported_packages() if canonicalize_name(DISTRIBUTIONS.get(name, name)) not in every}
    assert not missing, f"imported by src/catdog but not declared in pyproject.toml: {sorted(missing)}"


def test_serving_needs_no_tensorflow() -> None:
    assert not {canonicalize_name(req.name) for req in declared("base")} & {"tensorflow", "tensorflow-cpu", "keras"}
