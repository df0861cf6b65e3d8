"""Tests for catdog.web.bounded_json: JSON parsed with a bound on items and nesting."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from catdog.web.bounded_json import TooDeep, TooManyItems, loads

LIMITS = {"max_items": 16, "max_depth": 8}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=16) | st.dictionaries(st.text(), children, max_size=16),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None)
@given(json_values, st.sampled_from([None, 0, 2]), st.sampled_from(["utf-8", "utf-16", "utf-8-sig"]))
def test_agrees_with_the_standard_parser_within_the_limits(value, indent, encoding):
    text = json.dumps(value, indent=indent, ensure_ascii=False)
    try:
        expected = json.loads(text)
    except RecursionError:
        pytest.skip("deeper than the standard parser goes")
    try:
        parsed = loads(text.encode(encoding), **LIMITS)
    except TooDeep:
        return
    assert parsed == expected


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_refuses_what_the_standard_parser_refuses(data):
    try:
        expected = json.loads(data)
    except (ValueError, RecursionError):
        with pytest.raises((ValueError, RecursionError)):
            loads(data, **LIMITS)
        return
    try:
        assert loads(data, **LIMITS) == expected or expected != expected  # NaN is never equal
    except (TooDeep, TooManyItems):
        pass
    except ValueError:
        assert "NaN" in data.decode(errors="replace") or "Infinity" in data.decode(errors="replace")


@pytest.mark.parametrize(
    "document, path",
    [
        (b'{"images": [' + b"0," * 16 + b"0]}", ("images",)),
        (b'{"a": {"b": [' + b'"x",' * 20 + b'"x"]}}', ("a", "b")),
        (b"{" + b",".join(b'"k%d": 1' % i for i in range(17)) + b"}", ()),
        (b"[[], [" + b"1," * 17 + b"1]]", (1,)),
    ],
)
def test_a_list_or_object_over_the_limit_is_refused_with_its_path(document, path):
    with pytest.raises(TooManyItems) as caught:
        loads(document, **LIMITS)
    assert caught.value.path == path and caught.value.limit == 16


@pytest.mark.parametrize("document", [b"[" * 9 + b"]" * 9, b'{"a":' * 9 + b"1" + b"}" * 9, b"[" * 100_000])
def test_nesting_over_the_limit_is_refused(document):
    with pytest.raises(TooDeep):
        loads(document, **LIMITS)


def test_a_huge_list_is_refused_at_its_first_item_over_the_limit():
    # 14 MB of zeros: json.loads builds the whole list of 7 million items; the bound stops at the 17th.
    body = b'{"images": [' + b"0," * 7_000_000 + b"0]}"
    started = time.process_time()
    json.loads(body)
    whole = time.process_time() - started
    started = time.process_time()
    with pytest.raises(TooManyItems):
        loads(body, **LIMITS)
    assert time.process_time() - started < whole / 5


@pytest.mark.parametrize("document", [b"NaN", b"[Infinity]", b'{"a": -Infinity}', b"01", b"1.", b'"\x01"', b"[1,]"])
def test_what_is_not_json_is_refused(document):
    with pytest.raises(ValueError):
        loads(document, **LIMITS)
