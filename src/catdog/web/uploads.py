"""Read the images of a request, in any accepted form, without touching disk.

Accepted forms:

* multipart: one or several ``file`` fields (several make a batch);
* a raw body with ``Content-Type: image/*`` or ``application/octet-stream``;
* JSON ``{"image": "<base64 or data: URL>"}`` or ``{"images": [...]}``.

Images are counted before any is decoded: a JSON list is refused as soon as
it holds more than ``max_batch`` items (or the parser's bound on items and
nesting is crossed), a form as soon as it holds more than ``max_batch`` file
parts, so the work done on a request with too many images does not grow
with how many it holds.

The decoded image bytes of one request may total at most
``serving.max_upload_bytes``. The transport limit (``MAX_CONTENT_LENGTH``)
is larger by base64's 4/3 and some slack, so that a JSON body holding an
image under the limit is accepted, and everything above it answers 413.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import io
from typing import IO, Any

from flask import Request
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.formparser import FormDataParser

from catdog.web import bounded_json
from catdog.web.errors import ApiError, format_bytes, payload_too_large

try:  # what gunicorn raises while reading a malformed chunked body
    from gunicorn.http.errors import ParseException as ServerBodyError
except ImportError:  # another WSGI server
    ServerBodyError = OSError

TRUE_WORDS = {"1", "true", "yes", "on"}
# Any JSON list or object may hold this many items even when max_batch is lower (an object's few fields),
# and lists and objects nest at most this deep: no upload needs more.
JSON_MIN_ITEMS = 16
JSON_MAX_DEPTH = 32
ENVELOPE_SLACK = 64 * 1024
HOW_TO_SEND = (
    "send the image as multipart field 'file', as a raw body with Content-Type image/*, "
    'or as JSON {"image": "<base64>"}'
)


class MemoryRequest(Request):
    """A request whose uploaded files stay in memory (bounded by ``MAX_CONTENT_LENGTH``)."""

    def _get_file_stream(
        self,
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None = None,
        content_length: int | None = None,
    ) -> IO[bytes]:
        return io.BytesIO()


@dataclasses.dataclass(frozen=True)
class Upload:
    """One image of a request.

    Attributes:
        data: The encoded image bytes.
        name: The file name the client gave, if any (never trusted, only shown escaped).
        error: Why this item of a batch could not be read at all (bad base64);
            the other items are still answered.
    """

    data: bytes
    name: str = ""
    error: ApiError | None = None


@dataclasses.dataclass(frozen=True)
class Uploads:
    """The images of one request and how the client asked.

    Attributes:
        images: One or more uploads.
        batch: Whether the client sent a list (several files or ``images``),
            so the answer is a list too.
        explain: Whether the client asked for the heatmap.
    """

    images: list[Upload]
    batch: bool
    explain: bool


def transport_limit(max_upload_bytes: int) -> int:
    """The largest request body accepted: base64 of ``max_upload_bytes`` plus slack."""
    return max_upload_bytes * 4 // 3 + ENVELOPE_SLACK


def read_uploads(request: Request, *, max_bytes: int, max_batch: int) -> Uploads:
    """Collect the images of ``request``.

    Args:
        request: The incoming request.
        max_bytes: Most image bytes in one request.
        max_batch: Most images in one request.

    Returns:
        The images and the client's options.

    Raises:
        ApiError: 400 no image, a malformed, unreadable or cut-off body, or
            one shorter than its Content-Length, more than ``max_batch``
            images; 413 too many bytes, form parts or bytes in a text
            field; 415 an unsupported Content-Type.
    """
    try:
        uploads = _read(request, max_bytes, max_batch)
    except RequestEntityTooLarge as exc:
        raise payload_too_large(max_bytes) from exc
    except (OSError, ServerBodyError) as exc:  # a malformed chunk, or the client left mid-body
        raise ApiError(400, "bad_body", "the request body is malformed or was cut off") from exc
    if sum(len(upload.data) for upload in uploads.images) > max_bytes:
        raise payload_too_large(max_bytes)
    return uploads


def _read(request: Request, max_bytes: int, max_batch: int) -> Uploads:
    explain = _truthy(request.args.get("explain"))
    mimetype = request.mimetype
    if mimetype == "multipart/form-data":
        return _from_form(request, explain, max_batch)
    if mimetype == "application/x-www-form-urlencoded" or (not mimetype and not request.content_length):
        raise ApiError(400, "no_file", f"no image was sent: {HOW_TO_SEND}")
    if request.is_json:
        return _from_json(request, explain, max_batch)
    if mimetype.startswith("image/") or mimetype == "application/octet-stream":
        if request.content_length is not None and request.content_length > max_bytes:
            raise payload_too_large(max_bytes)
        return Uploads([Upload(_read_body(request))], batch=False, explain=explain)
    raise ApiError(415, "unsupported_media_type", f"Content-Type {mimetype or 'none'} is not accepted: {HOW_TO_SEND}")


def _read_body(request: Request) -> bytes:
    """The whole body (kept for the parsers), refused when it ends before its Content-Length."""
    data = request.get_data(cache=True)
    if request.content_length is not None and len(data) < request.content_length:
        raise ApiError(
            400,
            "bad_body",
            f"the request body ended after {len(data):,} of the {request.content_length:,} bytes "
            "its Content-Length announced",
        )
    return data


def too_many_files(max_batch: int) -> ApiError:
    """The 400 error for a request holding more than ``max_batch`` images."""
    return ApiError(400, "too_many_files", f"send at most {max_batch} images at once")


def _parse_form(request: Request, max_batch: int) -> tuple[MultiDict, MultiDict]:
    """Parse a multipart body into (fields, files), naming the true cause of a refusal.

    Werkzeug answers too many parts or a large text field with the same 413
    as an oversized body, and drops a malformed or cut-off body silently;
    parsing here, not silently, tells them apart. Parsing stops at the file
    part one over ``max_batch``.
    """
    body = _read_body(request)
    file_parts = 0

    def counted_file_stream(*args, **kwargs) -> IO[bytes]:
        nonlocal file_parts
        file_parts += 1
        if file_parts > max_batch:
            raise too_many_files(max_batch)
        return request._get_file_stream(*args, **kwargs)

    parser = FormDataParser(
        stream_factory=counted_file_stream,
        max_form_memory_size=request.max_form_memory_size,
        max_form_parts=request.max_form_parts,
        silent=False,
    )
    try:
        _, fields, files = parser.parse(io.BytesIO(body), request.mimetype, len(body), request.mimetype_params)
    except RequestEntityTooLarge as exc:
        boundary = request.mimetype_params.get("boundary", "").encode("latin-1", "replace")
        if request.max_form_parts is not None and body.count(b"--" + boundary) > request.max_form_parts:
            raise ApiError(413, "too_many_parts", f"the form has more than {request.max_form_parts:,} parts") from exc
        raise ApiError(
            413,
            "field_too_large",
            f"a text field of the form is larger than {format_bytes(request.max_form_memory_size or 0)}; "
            "send the image as a file part (with a filename)",
        ) from exc
    except ValueError as exc:
        raise ApiError(400, "bad_multipart", f"the multipart body is malformed or cut off ({exc})") from exc
    return fields, files


def _from_form(request: Request, explain: bool, max_batch: int) -> Uploads:
    fields, files = _parse_form(request, max_batch)
    images = [Upload(f.read(), f.filename or "") for f in files.getlist("file")]
    # A browser sends an empty, nameless part when no file was chosen.
    images = [image for image in images if image.data or image.name]
    if not images:
        raise ApiError(400, "no_file", "no file was chosen: send the image in the form field 'file'")
    explain = explain or _truthy(fields.get("explain"))
    return Uploads(images, batch=len(images) > 1, explain=explain)


def _from_json(request: Request, explain: bool, max_batch: int) -> Uploads:
    body = _read_body(request)
    try:
        payload = bounded_json.loads(body, max_items=max(max_batch, JSON_MIN_ITEMS), max_depth=JSON_MAX_DEPTH)
    except bounded_json.TooManyItems as exc:
        if exc.path == ("images",):
            raise too_many_files(max_batch) from exc
        raise ApiError(400, "bad_json", f"a list or object of the JSON body holds more than {exc.limit} items") from exc
    except (ValueError, UnicodeError):  # not JSON, not text, or nested too deep: not an upload either
        payload = None
    if not isinstance(payload, dict) or ("image" in payload) == ("images" in payload):
        raise ApiError(
            400, "bad_json", 'the body must be a JSON object with "image" (a base64 string) or "images" (a list)'
        )
    explain = explain or _truthy(payload.get("explain"))
    if "image" in payload:
        return Uploads([Upload(_decode_base64(payload["image"]))], batch=False, explain=explain)
    items = payload["images"]
    if not isinstance(items, list) or not items:
        raise ApiError(400, "bad_json", '"images" must be a non-empty list of base64 strings')
    if len(items) > max_batch:
        raise too_many_files(max_batch)
    return Uploads([_batch_item(item) for item in items], batch=True, explain=explain)


def _batch_item(value: Any) -> Upload:
    """One image of a JSON batch; a bad one keeps its error, so that the others are still answered."""
    try:
        return Upload(_decode_base64(value))
    except ApiError as exc:
        return Upload(b"", error=exc)


def _decode_base64(value: Any) -> bytes:
    """Decode plain or URL-safe base64, or a ``data:...;base64,`` URL."""
    if not isinstance(value, str):
        raise ApiError(400, "bad_base64", "the image must be a base64 string")
    text = value.strip()
    if text.startswith("data:"):
        header, comma, text = text.partition(",")
        if not comma or not header.endswith(";base64"):
            raise ApiError(400, "bad_base64", "a data: URL must be base64-encoded (data:image/...;base64,...)")
    text = "".join(text.split()).translate(str.maketrans("-_", "+/"))
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ApiError(400, "bad_base64", "the image is not valid base64") from exc


def _truthy(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return isinstance(value, (str, int)) and str(value).strip().lower() in TRUE_WORDS
