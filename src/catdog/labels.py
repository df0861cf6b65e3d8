"""How the model's class names read to people.

The classes come from config ``data.classes`` (``[Cat, Dog, Other]``): a
class named ``Other`` means "none of the other classes". The JSON API
answers the class name itself; the page and the console say it in words, so
that ``Other`` reads as "Neither a cat nor a dog" rather than as a third
kind of animal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

OTHER = "Other"


def describe(label: str, classes: Sequence[str]) -> str:
    """The verdict for ``label`` in words.

    Args:
        label: The predicted class name.
        classes: Every class name, in the model's order.

    Returns:
        The class name itself, or for :data:`OTHER` a sentence naming what
        the photo is not: ``"Neither a cat nor a dog"``.
    """
    if label != OTHER:
        return label
    named = [_with_article(name.lower()) for name in classes if name != OTHER]
    if not named:
        return label
    if len(named) == 1:
        return f"Not {named[0]}"
    if len(named) == 2:
        return f"Neither {named[0]} nor {named[1]}"
    return f"None of these: {', '.join(named[:-1])} or {named[-1]}"


def answer_note(label: str, probabilities: Mapping[str, float]) -> str | None:
    """Why the answer is not the most probable class, in one sentence; None when it is.

    Only a decision bias (a pet budget, ``training.max_pets_as_other``) answers
    a class other than the most probable one: the probabilities stay
    calibrated and the rule asks more of one class before answering it. The
    note says so rather than leaving a user to wonder why 62% lost to 35%.

    Args:
        label: The answer.
        probabilities: The probability of every class, in the model's order.

    Returns:
        ``"Other is likelier (62%), but the service answers Other only when a photo is clearly neither a
        cat nor a dog."`` and the like, or None when ``label`` is (one of) the most probable.
    """
    top = max(probabilities, key=probabilities.__getitem__)
    if probabilities[top] <= probabilities[label]:
        return None
    likelier = f"{top} is likelier ({probabilities[top]:.0%}), but the service answers"
    classes = list(probabilities)
    if top == OTHER:
        return f"{likelier} {OTHER} only when a photo is clearly {describe(OTHER, classes).lower()}."
    if label == OTHER:
        return f"{likelier} {OTHER} whenever a photo may well be {describe(OTHER, classes).lower()}."
    return f"{likelier} {top} only when it is clearly likelier than {label}."


def other_index(classes: Sequence[str]) -> int | None:
    """The position of :data:`OTHER` in ``classes``, or None when the model has no such class."""
    return list(classes).index(OTHER) if OTHER in classes else None


def _with_article(noun: str) -> str:
    return f"{'an' if noun and noun[0] in 'aeiou' else 'a'} {noun}"
