"""Parse a JSON request body with a bound on items and nesting.

``json.loads`` builds the whole document before anyone can count it: a
13 MB body of ``{"images": [0, 0, 0, ...]}`` becomes a list of millions of
objects (gigabytes, and seconds of CPU) before the batch limit is looked at.
:func:`loads` refuses a list or object as soon as it holds one item too
many, and a value nested too deep as soon as it opens, so the work done on
any body is bounded by the limits, not by its size. Strings and numbers go
through the standard library's own scanners (strings in C), so long base64
strings cost what they cost in ``json.loads``.
"""

from __future__ import annotations

import json
import re
from json.decoder import JSONDecodeError, scanstring
from typing import Any

_WHITESPACE = re.compile(r"[ \t\n\r]*")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_LITERALS = {"true": True, "false": False, "null": None}


class TooManyItems(ValueError):
    """A list or object holds more items than allowed.

    Attributes:
        path: The keys and indices leading to it from the top (``("images",)``).
        limit: The most items allowed.
    """

    def __init__(self, path: tuple[str | int, ...], limit: int):
        super().__init__(f"a list or object holds more than {limit} items")
        self.path = path
        self.limit = limit


class TooDeep(ValueError):
    """Lists and objects are nested deeper than allowed."""


def loads(data: bytes | str, *, max_items: int, max_depth: int) -> Any:
    """Parse a JSON document, refusing it as soon as it crosses a limit.

    Bytes are decoded as ``json.loads`` decodes them (UTF-8, 16 or 32, with or
    without a byte-order mark). ``NaN`` and ``Infinity``, which are not JSON,
    are refused.

    Args:
        data: The document.
        max_items: Most items of any one list or object.
        max_depth: Most lists and objects nested in one another.

    Returns:
        The parsed value.

    Raises:
        TooManyItems: A list or object holds more than ``max_items`` items.
        TooDeep: Nesting deeper than ``max_depth``.
        JSONDecodeError: The document is not JSON.
        UnicodeDecodeError: The bytes are not text.
    """
    text = data.decode(json.detect_encoding(data), "surrogatepass") if isinstance(data, bytes) else data
    text = text.removeprefix("\ufeff")
    value, end = _Parser(text, max_items, max_depth).value(_skip(text, 0), (), 0)
    end = _skip(text, end)
    if end != len(text):
        raise JSONDecodeError("Extra data", text, end)
    return value


def _skip(text: str, at: int) -> int:
    return _WHITESPACE.match(text, at).end()


class _Parser:
    def __init__(self, text: str, max_items: int, max_depth: int):
        self.text = text
        self.max_items = max_items
        self.max_depth = max_depth

    def value(self, at: int, path: tuple[str | int, ...], depth: int) -> tuple[Any, int]:
        """The value starting at ``at`` (no whitespace before it) and the offset just past it."""
        text = self.text
        char = text[at : at + 1]
        if char == '"':
            return scanstring(text, at + 1, True)
        if char in ("{", "["):
            if depth >= self.max_depth:
                raise TooDeep(f"lists and objects nest deeper than {self.max_depth}")
            return self.container(at, path, depth + 1)
        for word, literal in _LITERALS.items():
            if text.startswith(word, at):
                return literal, at + len(word)
        number = _NUMBER.match(text, at)
        if number is None:
            raise JSONDecodeError("Expecting value", text, at)
        try:
            parsed = float(number.group()) if number.group(1) or number.group(2) else int(number.group())
        except ValueError as exc:  # more digits than Python converts
            raise JSONDecodeError(str(exc), text, at) from exc
        return parsed, number.end()

    def container(self, at: int, path: tuple[str | int, ...], depth: int) -> tuple[Any, int]:
        """The list or object whose bracket is at ``at``."""
        text = self.text
        is_object = text[at] == "{"
        close = "}" if is_object else "]"
        items: dict[str, Any] | list[Any] = {} if is_object else []
        at = _skip(text, at + 1)
        if text[at : at + 1] == close:
            return items, at + 1
        count = 0
        while True:
            count += 1
            if count > self.max_items:
                raise TooManyItems(path, self.max_items)
            if is_object:
                if text[at : at + 1] != '"':
                    raise JSONDecodeError("Expecting property name enclosed in double quotes", text, at)
                key, at = scanstring(text, at + 1, True)
                at = _skip(text, at)
                if text[at : at + 1] != ":":
                    raise JSONDecodeError("Expecting ':' delimiter", text, at)
                item, at = self.value(_skip(text, at + 1), (*path, key), depth)
                items[key] = item
            else:
                item, at = self.value(at, (*path, count - 1), depth)
                items.append(item)
            at = _skip(text, at)
            char = text[at : at + 1]
            if char == close:
                return items, at + 1
            if char != ",":
                raise JSONDecodeError(f"Expecting ',' or '{close}'", text, at)
            at = _skip(text, at + 1)
