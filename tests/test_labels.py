"""The class names as people read them, and the Other class named in one place."""

from __future__ import annotations

import ast

import pytest

from catdog.config import PROJECT_ROOT
from catdog.labels import OTHER, describe, other_index


@pytest.mark.parametrize(
    ("classes", "expected"),
    [(("Cat", "Dog", "Other"), 2), (["Other", "Cat"], 0), (("Cat", "Dog"), None)],
)
def test_other_index(classes, expected) -> None:
    assert other_index(classes) == expected


def test_other_reads_as_none_of_the_other_classes() -> None:
    assert describe(OTHER, ("Cat", "Dog", OTHER)) == "Neither a cat nor a dog"
    assert describe("Cat", ("Cat", "Dog", OTHER)) == "Cat"


def test_the_other_class_is_named_only_in_labels_py() -> None:
    package = PROJECT_ROOT / "src" / "catdog"
    typed = [
        f"{path.relative_to(package)}:{node.lineno}"
        for path in package.rglob("*.py")
        if path.name != "labels.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant) and node.value == OTHER
    ]
    assert not typed, f"use catdog.labels.OTHER (or other_index) instead of the string {OTHER!r}: {typed}"
