"""The class names as people read them, and the Other class named in one place."""

from __future__ import annotations

import ast

import pytest

from catdog.config import PROJECT_ROOT
from catdog.labels import OTHER, answer_note, describe, other_index


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


@pytest.mark.parametrize(
    ("label", "probabilities", "expected"),
    [
        ("Other", {"Cat": 0.35, "Dog": 0.03, "Other": 0.62}, None),
        ("Cat", {"Cat": 0.5, "Dog": 0.5}, None),
        (
            "Cat",
            {"Cat": 0.35, "Dog": 0.03, "Other": 0.62},
            "Other is likelier (62%), but the service answers Other only when a photo is clearly neither a cat nor "
            "a dog.",
        ),
        (
            "Other",
            {"Cat": 0.45, "Dog": 0.2, "Other": 0.35},
            "Cat is likelier (45%), but the service answers Other whenever a photo may well be neither a cat nor "
            "a dog.",
        ),
        (
            "Dog",
            {"Cat": 0.45, "Dog": 0.4, "Other": 0.15},
            "Cat is likelier (45%), but the service answers Cat only when it is clearly likelier than Dog.",
        ),
    ],
    ids=["top", "tie", "other-held-back", "other-favoured", "between-pets"],
)
def test_a_note_says_why_only_when_the_answer_is_not_the_most_probable(label, probabilities, expected) -> None:
    assert answer_note(label, probabilities) == expected
