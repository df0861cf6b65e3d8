"""The request reader (catdog.web.framing) against the reference parser, h11, fed all at once.

Requests are generated well-formed and malformed, with a length, chunked or
with no body, pipelined, and fed to the reader in random splits. What the
app then sees (the canonical request read by gunicorn's parser, as the
worker's threads read it) must be the request h11 reads from the same bytes,
or the reader must refuse it with a 4xx (501 for a transfer coding it does
not know, as RFC 9112 asks); it must never wait for bytes it already has.
"""

from __future__ import annotations

import h11
import pytest
from gunicorn.config import Config
from gunicorn.http.errors import ParseException
from gunicorn.http.parser import RequestParser
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from catdog.web.framing import Closed, Complete, Refused, RequestReader

MAX_HEAD = 64 * 1024
MAX_BODY = 4096
CFG = Config()

TOKEN_CHARACTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-!#$%&'*+.^_`|~"
tokens = st.text(TOKEN_CHARACTERS, min_size=1, max_size=12)
junk = st.binary(max_size=12)


def mostly(good, bad):
    """``good`` seven times in eight, else ``bad``: most requests stay readable, every part is sometimes broken."""
    return st.integers(0, 7).flatmap(lambda roll: bad if roll == 0 else good)


methods = mostly(st.sampled_from([b"GET", b"POST", b"PUT", b"HEAD", b"OPTIONS"]) | tokens.map(str.encode), junk)
targets = mostly(st.sampled_from([b"/", b"/predict", b"/predict?explain=1", b"/a%20b", b"*", b"http://x/y"]), junk)
versions = mostly(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0"]), st.sampled_from([b"HTTP/2.0", b"http/1.1"]) | junk)
separators = mostly(st.just(b": "), st.sampled_from([b":", b" : ", b":\r\n "]))
values = mostly(st.text(" \tabcxyz0123456789;=,/-", max_size=16).map(str.encode), junk)
bad_lengths = st.sampled_from([b"+3", b"-6", b"3, 3", b"3, 4", b" 3 ", b"0x3", b"99999999999999999999"])
codings = mostly(st.just(b"chunked"), st.sampled_from([b"Chunked", b"gzip, chunked", b"chunked, gzip", b"identity"]))


@st.composite
def chunked_body(draw) -> bytes:
    """A chunked body, mostly well-formed, sometimes with a bad size line, extension or ending."""
    body = b""
    for piece in draw(st.lists(st.binary(min_size=1, max_size=40), max_size=4)):
        bad_sizes = st.sampled_from([b"-6", b" %x" % len(piece), b"%x" % (len(piece) + 1)]) | junk
        size = draw(mostly(st.sampled_from([b"%x" % len(piece), b"%X" % len(piece)]), bad_sizes))
        extension = draw(mostly(st.sampled_from([b"", b";a=b"]), st.just(b";" + b"a" * 1100)))
        body += size + extension + b"\r\n" + piece + draw(mostly(st.just(b"\r\n"), st.sampled_from([b"\n", b""])))
    last = draw(mostly(st.sampled_from([b"0\r\n", b"0;x\r\n"]), st.just(b"")))
    trailer = draw(mostly(st.sampled_from([b"", b"X-T: 1\r\n"]), st.just(b"bad trailer\r\n")))
    return body + last + trailer + b"\r\n"


@st.composite
def raw_request(draw) -> bytes:
    """One request's bytes: request line, headers and body."""
    line = draw(methods) + b" " + draw(targets) + b" " + draw(versions)
    headers = []
    if draw(mostly(st.just(True), st.just(False))):
        headers.append(b"Host: x")
    for _ in range(draw(st.integers(0, 3))):
        headers.append(draw(tokens).encode() + draw(separators) + draw(values))
    body = b""
    framing = draw(st.sampled_from(["none", "length", "chunked", "length", "chunked", "both"]))
    if framing in ("length", "both"):
        body = draw(st.binary(max_size=40))
        headers.append(b"Content-Length: " + draw(mostly(st.just(str(len(body)).encode()), bad_lengths)))
    if framing in ("chunked", "both"):
        headers.append(b"Transfer-Encoding: " + draw(codings))
        body = draw(chunked_body())
    if draw(st.integers(0, 3)) == 0:
        headers.append(b"Expect: 100-continue")
    return line + b"\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body


def reference(data: bytes) -> tuple | None:
    """What h11 reads from ``data`` followed by the end of the connection: (request, body), or None if refused."""
    connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
    connection.receive_data(data)
    connection.receive_data(b"")
    request, body = None, b""
    try:
        while True:
            event = connection.next_event()
            if isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return request, body
            elif event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
                return None
    except h11.RemoteProtocolError:
        return None


def read_in_pieces(data: bytes, cuts: list[int]) -> tuple[Complete | Refused | Closed, bytes]:
    """Feed ``data`` to a reader cut at ``cuts``, then the end of the connection (``b""``).

    Returns:
        The first outcome, and the bytes fed until then (the rest would wait in the socket).
    """
    reader = RequestReader(MAX_HEAD, MAX_BODY)
    edges = [0, *sorted({cut for cut in cuts if 0 < cut < len(data)}), len(data)]
    for start, end in zip(edges, edges[1:], strict=False):
        outcome = reader.feed(data[start:end])
        if outcome is not None:
            return outcome, data[:end]
    outcome = reader.feed(b"")
    assert outcome is not None, "the reader waits for more after the end of the connection"
    return outcome, data


def as_the_app_sees_it(canonical: bytes):
    """The request gunicorn's parser reads from the canonical bytes, as a worker thread does."""
    request = next(RequestParser(CFG, [canonical], ("127.0.0.1", 1)))
    return request, request.body.read()


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(raw_request(), min_size=1, max_size=2).map(b"".join), st.lists(st.integers(0, 400), max_size=6))
@pytest.mark.timeout(300)
def test_the_reader_agrees_with_h11_or_refuses(data, cuts):
    outcome, fed = read_in_pieces(data, cuts)
    # The outcome does not depend on how the bytes were split (the wording of a refusal may, and what
    # follows a complete request is in the leftover or still in the socket).
    whole, _ = read_in_pieces(data, [])
    if isinstance(outcome, Refused):
        assert isinstance(whole, Refused) and whole.status == outcome.status, (outcome, whole)
    elif isinstance(outcome, Complete):
        assert isinstance(whole, Complete) and (outcome.request, outcome.close) == (whole.request, whole.close)
        assert fed.endswith(outcome.leftover)
    else:
        assert outcome == whole
    expected = reference(data)
    if isinstance(outcome, Refused):
        assert 400 <= outcome.status < 500 or outcome.status == 501, outcome
        return
    if isinstance(outcome, Closed):
        assert data == b""
        return
    if expected is None or outcome.close:
        # Refused by h11 only once the connection ended (a cut-off body), or too large: the app refuses it.
        assert outcome.close
        return
    try:
        request, body = as_the_app_sees_it(outcome.request)
    except ParseException:
        return  # gunicorn answers 400 to what it refuses
    h11_request, h11_body = expected
    assert request.method.encode() == h11_request.method
    assert request.uri.encode("latin-1") == h11_request.target
    assert b"HTTP/%d.%d" % request.version == b"HTTP/" + h11_request.http_version
    assert body == h11_body
    # gunicorn drops headers whose names hold "_" (its header_map "drop": they would collide with "-" in WSGI).
    dropped = (b"content-length", b"transfer-encoding", b"expect")
    kept = [(n, v) for n, v in h11_request.headers if n not in dropped and b"_" not in n]
    seen = [(n.lower().encode(), v.encode("latin-1")) for n, v in request.headers if n != "CONTENT-LENGTH"]
    assert seen == kept


@pytest.mark.parametrize(
    "data, status",
    [
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-6\r\nabcdef\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"GET / HTTP/1.1\r\nBad Header: 1\r\n\r\n", 400),
    ],
)
def test_malformed_framing_is_refused_at_once(data, status):
    outcome = RequestReader(MAX_HEAD, MAX_BODY).feed(data)
    assert isinstance(outcome, Refused) and outcome.status == status, outcome


def test_a_long_chunk_size_line_is_waited_for_not_handed_on():
    # The line is not complete: nothing to hand a thread; the worker's deadline ends the wait.
    reader = RequestReader(MAX_HEAD, MAX_BODY)
    assert reader.feed(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1;" + b"a" * 1100) is None
    assert reader.head_complete


def test_a_chunked_body_becomes_a_plain_one_and_the_next_request_is_kept():
    data = (
        b"POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;e=1\r\nde\r\n0\r\n\r\nGET / H"
    )
    outcome = RequestReader(MAX_HEAD, MAX_BODY).feed(data)
    assert outcome == Complete(b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nabcde", leftover=b"GET / H")


def test_a_body_over_the_limit_is_not_read():
    head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1)
    outcome = RequestReader(MAX_HEAD, MAX_BODY).feed(head)
    assert isinstance(outcome, Complete) and outcome.close
    request, body = as_the_app_sees_it(outcome.request)
    assert request.headers == [("HOST", "x"), ("CONTENT-LENGTH", str(MAX_BODY + 1)), ("CONNECTION", "close")]
    chunked = RequestReader(MAX_HEAD, MAX_BODY).feed(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n" % (MAX_BODY + 1) + bytes(MAX_BODY + 1)
    )
    assert isinstance(chunked, Complete) and chunked.close and chunked.request.endswith(b"\r\n\r\n")


def test_a_body_cut_short_reaches_the_app_with_its_declared_length():
    reader = RequestReader(MAX_HEAD, MAX_BODY)
    assert reader.feed(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc") is None
    outcome = reader.feed(b"")
    assert isinstance(outcome, Complete) and outcome.close
    request, body = as_the_app_sees_it(outcome.request)
    assert ("CONTENT-LENGTH", "10") in request.headers and body == b"abc"
