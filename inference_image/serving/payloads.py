"""Turn request bodies into float32 feature matrices, or into errors that name the field.

Every parser has a fast path (one C-level gather, one type scan, one NumPy conversion) for
well-formed requests, and a slow path that walks the request value by value only to
produce the error message (or, defensively, the same matrix). Body reading works on the
WSGI environ, so nothing here depends on Flask.
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from inference_image.schema import MISSING_TOKEN

from . import binary
from .validation import F32_OVERFLOW, PayloadError, byte_count, describe, shown_count

__all__ = [
    "F32_OVERFLOW",
    "InferParser",
    "InferRequest",
    "PayloadError",
    "RecordParser",
    "body_too_large",
    "describe",
    "parse_infer_json",
    "parse_json",
    "read_body",
    "read_infer_body",
    "read_json_body",
]

JSON_MEDIA_TYPE = "application/json"
OUTPUT_NAMES = ("probability", "label")
V2_DATATYPES = ("FP32", "FP64")
_NUMERIC_TYPES = frozenset({int, float, type(None)})
_NA_TO_NONE: dict[Any, None] = {MISSING_TOKEN: None}
_SHOW = 5  # names listed in an error message before "and N more"
_NOT_JSON = "request body is not valid JSON: "


def is_json_content_type(content_type: str) -> bool:
    """``application/json``, in any case, with or without parameters such as charset."""
    if content_type == JSON_MEDIA_TYPE:
        return True
    return content_type.partition(";")[0].strip().lower() == JSON_MEDIA_TYPE


def read_body(environ: Mapping[str, Any], limit: int) -> bytes:
    """Read a WSGI request body of at most ``limit`` bytes (PayloadError 413 beyond it).

    Reads ``wsgi.input`` directly: werkzeug's limited stream would silently truncate a
    chunked body at the limit instead of refusing it. A body that does not arrive within
    the server's request time limit (the worker's read deadline raises TimeoutError) is
    a 408.
    """
    try:
        return _read_body(environ, limit)
    except TimeoutError as exc:
        raise PayloadError(f"request body not received in time: {exc}", status=408) from None
    except OSError as exc:  # the client went away mid-body: nobody reads this answer
        raise PayloadError(f"request body could not be read: {exc}") from None


def body_too_large(size: str | int, limit: int) -> PayloadError:
    """The 413 of a body whose size is known before it is read (HTTP's Content-Length, an
    MQTT message's payload)."""
    return PayloadError(
        f"request body of {size} bytes exceeds the limit of {limit} bytes", status=413
    )


def _read_body(environ: Mapping[str, Any], limit: int) -> bytes:
    stream = environ["wsgi.input"]
    raw_length = environ.get("CONTENT_LENGTH") or ""
    chunked = "chunked" in (environ.get("HTTP_TRANSFER_ENCODING") or "").lower()
    if raw_length and not chunked:
        length = byte_count(raw_length)
        if length is None:
            raise PayloadError(f"invalid Content-Length header {raw_length[:20]!r}")
        if length > limit:
            raise body_too_large(shown_count(raw_length.lstrip("0")), limit)
        return stream.read(length) if length else b""
    if not environ.get("wsgi.input_terminated"):
        return b""  # no length and a server that does not delimit the body: nothing is safe
    chunks: list[bytes] = []
    size = 0
    while chunk := stream.read(min(1 << 16, limit + 1 - size)):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise PayloadError(f"request body exceeds the limit of {limit} bytes", status=413)
    return b"".join(chunks)


def read_json_body(environ: Mapping[str, Any], limit: int) -> Any:
    """Check the Content-Type (415), read the body (413) and parse it as JSON (400)."""
    content_type = environ.get("CONTENT_TYPE") or ""
    if not is_json_content_type(content_type):
        shown = repr(content_type[:100]) if content_type else "no Content-Type"
        raise PayloadError(f"Content-Type must be application/json, got {shown}", status=415)
    return parse_json(read_body(environ, limit))


def read_infer_body(environ: Mapping[str, Any], limit: int) -> tuple[Any, memoryview | None]:
    """A V2 infer request's JSON document and, for the binary extension, the bytes after it.

    ``Inference-Header-Content-Length`` tells the two apart: with it the body is the binary
    tensor extension (Content-Type application/octet-stream, application/json or none);
    without it the body is JSON, with Content-Type application/json or none at all, which
    is what tritonclient's JSON mode sends. Any other Content-Type is a 415 naming it.
    """
    content_type = environ.get("CONTENT_TYPE") or ""
    header_length = environ.get(binary.HEADER_ENVIRON)
    if header_length is None:
        if content_type and not is_json_content_type(content_type):
            hint = ""
            if binary.media_type(content_type) == binary.MEDIA_TYPE:
                hint = f" ({binary.MEDIA_TYPE} needs the {binary.HEADER} header)"
            raise PayloadError(
                f"Content-Type must be application/json (or none), got "
                f"{content_type[:100]!r}{hint}",
                status=415,
            )
        body = read_body(environ, limit)
        try:
            return parse_infer_json(body), None
        except PayloadError as exc:
            if b"binary_data_size" in body and exc.message.startswith(_NOT_JSON):
                raise PayloadError(
                    f"{exc.message}; binary tensor data needs the {binary.HEADER} header"
                ) from None
            raise
    if binary.media_type(content_type) not in binary.ACCEPTED_MEDIA_TYPES:
        raise PayloadError(
            f"Content-Type must be {binary.MEDIA_TYPE} (or none) with "
            f"{binary.HEADER}, got {content_type[:100]!r}",
            status=415,
        )
    head, tail = binary.split_body(read_body(environ, limit), header_length.strip())
    return parse_infer_json(head), tail


def parse_json(body: bytes) -> Any:
    """Parse a request body (UTF-8 JSON; NaN and Infinity literals are rejected)."""
    if not body:
        raise PayloadError("request body is empty: expected a JSON document")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise PayloadError(_invalid_json(exc)) from None


def parse_infer_json(body: bytes) -> Any:
    """:func:`parse_json` for V2 infer, which also takes bare ``NaN`` tokens (as Python's
    json module and tritonclient's JSON mode write missing values) in an input tensor's
    ``data``, as float NaN: a missing value, as in a binary tensor. NaN anywhere else,
    ``Infinity`` and ``-Infinity`` are refused.

    orjson parses every body first (the single-record speed); only a body orjson refuses
    at a ``NaN`` token is parsed again, by the stdlib json module with orjson's rules
    for everything else.
    """
    if not body:
        raise PayloadError("request body is empty: expected a JSON document")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if _constant_at(exc) != "NaN":
            raise PayloadError(_invalid_json(exc)) from None
    return _parse_with_nan(body)


def _constant_at(exc: orjson.JSONDecodeError) -> str | None:
    """``NaN``, ``Infinity`` or ``-Infinity`` when orjson stopped at that bare token."""
    doc, pos = exc.doc, exc.pos
    if type(doc) is not str or type(pos) is not int:
        return None
    if doc.startswith("NaN", pos):
        return "NaN"
    if doc.startswith("Infinity", pos):
        return "-Infinity" if pos and doc[pos - 1] == "-" else "Infinity"
    return None


def _constant_problem(token: str) -> str:
    if token == "NaN":
        return 'NaN is not JSON: send null (or "na") for a missing value'
    return f"{token} is not JSON, and feature values must be finite float32 numbers"


def _invalid_json(exc: orjson.JSONDecodeError) -> str:
    token = _constant_at(exc)
    if token is None:
        return f"{_NOT_JSON}{exc}"
    return f"{_NOT_JSON}{_constant_problem(token)} (line {exc.lineno} column {exc.colno})"


# The json module's parse_constant: NaN is a float NaN; Infinity and -Infinity raise a
# KeyError. A C-level lookup, not a Python function: it runs once per NaN.
_NAN_ONLY = {"NaN": math.nan}.__getitem__
_NAN_DECODER = json.JSONDecoder(parse_constant=_NAN_ONLY)
_INT64_MIN, _UINT64_END = -(2**63), 2**64


def _parse_with_nan(body: bytes) -> Any:
    """The json module's parse, then made to agree with orjson outside ``inputs[i].data``.

    Inside it, NaN is a missing value and the matrix conversion refuses what orjson would
    (infinities, values beyond float32) with the value's position.
    """
    try:
        text = body.decode()
    except UnicodeDecodeError as exc:
        raise PayloadError(f"{_NOT_JSON}not UTF-8 at byte {exc.start}") from None
    try:
        document = _NAN_DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise PayloadError(f"{_NOT_JSON}{exc}") from None
    except RecursionError:
        raise PayloadError(_NOT_JSON + "nested too deeply") from None
    except KeyError as exc:  # Infinity or -Infinity, from _NAN_ONLY
        raise PayloadError(f"{_NOT_JSON}{_constant_problem(str(exc.args[0]))}") from None
    except ValueError as exc:  # an integer literal of more than 4,300 digits
        raise PayloadError(f"{_NOT_JSON}{str(exc)[:80]}") from None
    root = [document]
    problem = _misplaced_value(root)
    if problem is not None:
        raise PayloadError(problem)
    return root[0]


def _misplaced_value(root: list[Any]) -> str | None:
    """What the json module takes and orjson does not, outside ``inputs[i].data``: NaN,
    infinities (from literals such as 1e400) and strings with lone surrogates. Integers
    beyond 64 bits become floats in place, as orjson reads them. ``root``: [document].
    Iterative: the document may be nested as deeply as the json module allows."""
    # (container, key, where: a (parent, key) chain, whether the value is an element of
    # "inputs"), pushed in reverse so that values pop in document order.
    stack: list[tuple[Any, Any, Any, bool]] = [(root, 0, None, False)]
    while stack:
        container, key, where, is_tensor = stack.pop()
        value = container[key]
        kind = type(value)
        if kind is float:
            if value != value:
                return (
                    f"{_position(where)}: NaN is only accepted in an input tensor's data, "
                    "where it means a missing value"
                )
            if value in (math.inf, -math.inf):
                return f"{_position(where)}: number is infinity when parsed as double"
        elif kind is int:
            if not _INT64_MIN <= value < _UINT64_END:
                try:
                    container[key] = float(value)
                except OverflowError:
                    return f"{_position(where)}: number is infinity when parsed as double"
        elif kind is str:
            if _lone_surrogate(value):
                return f"{_position(where)}: the string holds a lone surrogate (not valid JSON)"
        elif kind is dict:
            top = where is None
            for name in reversed(value):
                if _lone_surrogate(name):
                    return f"{_position(where)}: a key holds a lone surrogate (not valid JSON)"
                if is_tensor and name == "data":
                    continue
                item = value[name]
                if top and name == "inputs" and type(item) is list:
                    inputs = (where, name)
                    stack.extend(
                        (item, index, (inputs, index), True) for index in reversed(range(len(item)))
                    )
                else:
                    stack.append((value, name, (where, name), False))
        elif kind is list:
            stack.extend(
                (value, index, (where, index), False) for index in reversed(range(len(value)))
            )
    return None


def _lone_surrogate(text: str) -> bool:
    if text.isascii():
        return False
    try:
        text.encode()
    except UnicodeEncodeError:
        return True
    return False


def _position(where: Any) -> str:
    keys: list[str | int] = []
    while where is not None:
        where, key = where
        keys.append(key)
    text = "request body" if keys and type(keys[-1]) is int else ""
    for key in reversed(keys):
        if type(key) is int:
            text += f"[{key}]"
        else:
            shown = key if len(key) <= 40 and key.isprintable() else repr(key[:37])
            text += f".{shown}" if text else shown
    return text or "request body"


def _listing(names: Sequence[str]) -> str:
    shown = ", ".join(
        repr(name if len(name) <= 40 else name[:37] + "...") for name in names[:_SHOW]
    )
    more = len(names) - _SHOW
    return shown + (f" and {more} more" if more > 0 else "")


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _fast_float32(flat: Sequence[Any], allow_na: bool) -> np.ndarray | None:
    """float32 array of ``flat`` (None -> NaN), or None when any value needs the slow path."""
    types = set(map(type, flat))
    if allow_na and str in types:
        try:  # "na" -> None; hashing is the cheapest per-value test in CPython
            flat = list(map(_NA_TO_NONE.get, flat, flat))
        except TypeError:  # an unhashable value (array or object): the slow path explains
            return None
        types = set(map(type, flat))
    if not types <= _NUMERIC_TYPES:
        return None
    try:
        # Straight to float32 (None -> NaN): a double at or beyond F32_OVERFLOW becomes
        # infinity, exactly the values the slow path refuses; JSON has no infinities.
        with np.errstate(over="ignore"):
            matrix = np.array(flat, dtype=np.float32)
    except (OverflowError, ValueError, TypeError):
        return None
    if np.isinf(matrix).any():
        return None
    return matrix


def _value_problem(value: Any, allow_na: bool) -> str | None:
    """Why ``value`` is not an acceptable feature value, or None (with the float to use)."""
    kind = type(value)
    if kind is float or kind is int:
        try:
            magnitude = abs(float(value))
        except OverflowError:
            magnitude = math.inf
        if magnitude >= F32_OVERFLOW:
            return f"{value!r} is outside the float32 range"
        return None
    if value is None or (allow_na and value == MISSING_TOKEN and kind is str):
        return None
    expected = 'a number, null or "na"' if allow_na else "a number or null"
    return f"expected {expected}, got {describe(value)}"


def _as_float(value: Any) -> float:
    return math.nan if value is None or type(value) is str else float(value)


class RecordParser:
    """Parse ``/predict`` bodies: one record object, or ``{"instances": [record, ...]}``.

    A record maps every feature name to a number, null or "na" (missing).
    """

    def __init__(self, feature_names: Sequence[str], max_rows: int) -> None:
        self.feature_names = tuple(feature_names)
        self._known = frozenset(self.feature_names)
        self.max_rows = max_rows
        # One C call per record; a tuple of all values in schema order.
        getter = operator.itemgetter(*self.feature_names)
        self._getter = getter if len(self.feature_names) > 1 else lambda r: (getter(r),)

    def parse(self, document: Any) -> np.ndarray:
        """Return a (n, n_features) float32 matrix or raise PayloadError."""
        if type(document) is not dict:
            raise PayloadError(
                'request body: expected a JSON object (one record, or {"instances": [...]}), '
                f"got {describe(document)}"
            )
        if "instances" not in document:
            return self.parse_records([document], single=True)
        extra = [key for key in document if key != "instances"]
        if extra:
            raise PayloadError(
                f'request body: unknown field {_listing(extra)} next to "instances" '
                '(send one record, or {"instances": [...]})'
            )
        records = document["instances"]
        if type(records) is not list:
            raise PayloadError(f"instances: expected an array of records, got {describe(records)}")
        return self.parse_records(records)

    def parse_records(self, records: list[Any], single: bool = False) -> np.ndarray:
        if not records:
            raise PayloadError("instances: expected at least one record, got an empty array")
        if len(records) > self.max_rows:
            raise PayloadError(
                f"instances: {len(records)} records exceed the limit of {self.max_rows} "
                "per request",
                status=413,
            )
        names = self.feature_names
        width = len(names)
        if all(type(record) is dict and len(record) == width for record in records):
            getter = self._getter
            flat: list[Any] | tuple[Any, ...] | None
            try:
                if len(records) == 1:
                    flat = getter(records[0])
                else:
                    flat = []
                    for record in records:
                        flat += getter(record)
            except KeyError:
                flat = None
            if flat is not None:
                matrix = _fast_float32(flat, allow_na=True)
                if matrix is not None:
                    return matrix.reshape(len(records), width)
        return self._parse_slowly(records, single)

    def _parse_slowly(self, records: list[Any], single: bool) -> np.ndarray:
        rows: list[list[float]] = []
        for index, record in enumerate(records):
            where = "record" if single else f"instances[{index}]"
            prefix = "" if single else f"{where}."
            if type(record) is not dict:
                raise PayloadError(
                    f"{where}: expected an object mapping feature names to values, "
                    f"got {describe(record)}"
                )
            self._check_names(record, where)
            row: list[float] = []
            for name in self.feature_names:
                value = record[name]
                problem = _value_problem(value, allow_na=True)
                if problem is not None:
                    raise PayloadError(f"{prefix}{name}: {problem}")
                row.append(_as_float(value))
            rows.append(row)
        return np.array(rows, dtype=np.float32)

    def _check_names(self, record: dict[str, Any], where: str) -> None:
        if len(record) == len(self.feature_names) and all(name in record for name in self._known):
            return
        unknown = [key for key in record if key not in self._known]
        missing = [name for name in self.feature_names if name not in record]
        problems = []
        if unknown:
            problems.append(f"{_plural(len(unknown), 'unknown feature')}: {_listing(unknown)}")
        if missing:
            problems.append(f"{_plural(len(missing), 'missing feature')}: {_listing(missing)}")
        raise PayloadError(f"{where}: {'; '.join(problems)}")


@dataclass(frozen=True)
class InferRequest:
    """A parsed Open Inference Protocol V2 request; ``binary_outputs[i]`` tells whether
    ``outputs[i]`` goes back as raw bytes (the binary tensor data extension)."""

    rows: np.ndarray
    outputs: tuple[str, ...]
    id: str | None = None
    binary_outputs: tuple[bool, ...] = ()


_REQUEST_FIELDS = ("id", "parameters", "inputs", "outputs")
_TENSOR_FIELDS = ("name", "shape", "datatype", "data", "parameters")
_OUTPUT_FIELDS = ("name", "parameters")


def _reject_unknown(obj: dict[str, Any], allowed: Sequence[str], where: str) -> None:
    unknown = [key for key in obj if key not in allowed]
    if unknown:
        raise PayloadError(
            f"{where}: unknown field {_listing(unknown)}; expected {', '.join(allowed)}"
        )


def _require(obj: dict[str, Any], name: str, kind: type, where: str, noun: str) -> Any:
    if name not in obj:
        raise PayloadError(f"{where}{name}: required field is missing")
    value = obj[name]
    if type(value) is not kind:
        raise PayloadError(f"{where}{name}: expected {noun}, got {describe(value)}")
    return value


class InferParser:
    """Parse V2 ``/infer`` bodies into an :class:`InferRequest`."""

    def __init__(self, feature_names: Sequence[str], max_rows: int) -> None:
        self.feature_names = tuple(feature_names)
        self.max_rows = max_rows

    def parse(self, document: Any, tail: memoryview | None = None) -> InferRequest:
        """``tail``: the bytes after the JSON part of a binary-extension request."""
        if type(document) is not dict:
            raise PayloadError(
                f'request body: expected a JSON object with "inputs", got {describe(document)}'
            )
        _reject_unknown(document, _REQUEST_FIELDS, "request body")
        request_id = document.get("id")
        if request_id is not None and type(request_id) is not str:
            raise PayloadError(f"id: expected a string, got {describe(request_id)}")
        if "id" in document and request_id is None:
            raise PayloadError("id: expected a string, got null")
        if "parameters" in document:
            _require(document, "parameters", dict, "", "an object")
        binary_default = binary.flag(document.get("parameters"), "binary_data_output", "", False)
        inputs = _require(document, "inputs", list, "", "an array of input tensors")
        if len(inputs) != 1:
            raise PayloadError(
                f"inputs: this model takes exactly 1 input tensor, got {len(inputs)}"
            )
        rows = self._parse_tensor(inputs[0], "inputs[0]", tail)
        outputs, binary_outputs = self._parse_outputs(document, binary_default)
        return InferRequest(rows, outputs, request_id, binary_outputs)

    def _parse_tensor(self, tensor: Any, where: str, tail: memoryview | None) -> np.ndarray:
        if type(tensor) is not dict:
            raise PayloadError(f"{where}: expected an input tensor object, got {describe(tensor)}")
        _reject_unknown(tensor, _TENSOR_FIELDS, where)
        prefix = f"{where}."
        _require(tensor, "name", str, prefix, "a string")
        datatype = _require(tensor, "datatype", str, prefix, "a string")
        if datatype not in V2_DATATYPES:
            raise PayloadError(
                f"{prefix}datatype: unsupported datatype {datatype[:40]!r}; expected FP32 or FP64"
            )
        if "parameters" in tensor:
            _require(tensor, "parameters", dict, prefix, "an object")
        n_rows = self._parse_shape(_require(tensor, "shape", list, prefix, "an array"), prefix)
        size = binary.binary_size(tensor, prefix)
        if size is None:
            if tail:
                raise PayloadError(
                    f"request body: {len(tail)} bytes follow the JSON part, but no input has "
                    "parameters.binary_data_size"
                )
            data = _require(tensor, "data", list, prefix, "an array")
            return self._parse_data(data, n_rows, tensor["shape"], prefix)
        if tail is None:
            raise PayloadError(
                f"{prefix}parameters.binary_data_size: binary data needs the {binary.HEADER} header"
            )
        if size != len(tail):
            raise PayloadError(
                f"{prefix}parameters.binary_data_size: {size} bytes announced, "
                f"{len(tail)} follow the JSON part"
            )
        return binary.decode_rows(tail, datatype, n_rows, self.feature_names, prefix)

    def _parse_shape(self, shape: list[Any], prefix: str) -> int:
        width = len(self.feature_names)
        if len(shape) not in (1, 2):
            raise PayloadError(
                f"{prefix}shape: expected [N, {width}] or [{width}], got {len(shape)} dimensions"
            )
        for index, dim in enumerate(shape):
            if type(dim) is not int:
                raise PayloadError(
                    f"{prefix}shape[{index}]: expected an integer, got {describe(dim)}"
                )
        if shape[-1] != width or shape[0] < 0:
            raise PayloadError(f"{prefix}shape: expected [N, {width}] or [{width}], got {shape}")
        n_rows = shape[0] if len(shape) == 2 else 1
        if n_rows == 0:
            raise PayloadError(f"{prefix}shape: expected at least one row, got {shape}")
        if n_rows > self.max_rows:
            raise PayloadError(
                f"{prefix}shape: {n_rows} rows exceed the limit of {self.max_rows} per request",
                status=413,
            )
        return n_rows

    def _parse_data(
        self, data: list[Any], n_rows: int, shape: list[int], prefix: str
    ) -> np.ndarray:
        width = len(self.feature_names)
        nested = bool(data) and type(data[0]) is list
        if nested:
            for index, row in enumerate(data):
                if type(row) is not list:
                    raise PayloadError(
                        f"{prefix}data[{index}]: expected a row array like data[0], "
                        f"got {describe(row)}"
                    )
                if len(row) != width:
                    raise PayloadError(
                        f"{prefix}data[{index}]: expected {width} values per row, got {len(row)}"
                    )
            flat = [value for row in data for value in row]
        else:
            flat = data
        if len(flat) != n_rows * width:
            raise PayloadError(
                f"{prefix}data: expected {n_rows * width} values for shape {shape}, got {len(flat)}"
            )
        matrix = _fast_float32(flat, allow_na=False)
        if matrix is None:
            matrix = self._convert_slowly(flat, nested, prefix)
        return matrix.reshape(n_rows, width)

    def _convert_slowly(self, flat: list[Any], nested: bool, prefix: str) -> np.ndarray:
        width = len(self.feature_names)
        values: list[float] = []
        for index, value in enumerate(flat):
            problem = _value_problem(value, allow_na=False)
            if problem is not None:
                row, column = divmod(index, width)
                position = f"data[{row}][{column}]" if nested else f"data[{index}]"
                raise PayloadError(
                    f"{prefix}{position} (row {row}, feature {self.feature_names[column]}): "
                    f"{problem}"
                )
            values.append(_as_float(value))
        return np.array(values, dtype=np.float32)

    def _parse_outputs(
        self, document: dict[str, Any], binary_default: bool
    ) -> tuple[tuple[str, ...], tuple[bool, ...]]:
        if "outputs" not in document:
            return OUTPUT_NAMES, (binary_default,) * len(OUTPUT_NAMES)
        outputs = _require(document, "outputs", list, "", "an array of requested outputs")
        names: list[str] = []
        flags: list[bool] = []
        for index, output in enumerate(outputs):
            where = f"outputs[{index}]"
            if type(output) is not dict:
                raise PayloadError(
                    f'{where}: expected an object with "name", got {describe(output)}'
                )
            _reject_unknown(output, _OUTPUT_FIELDS, where)
            name = _require(output, "name", str, f"{where}.", "a string")
            if name not in OUTPUT_NAMES:
                raise PayloadError(
                    f"{where}.name: unknown output {name[:40]!r}; "
                    f"expected one of {', '.join(OUTPUT_NAMES)}"
                )
            if "parameters" in output:
                _require(output, "parameters", dict, f"{where}.", "an object")
            parameters = output.get("parameters")
            as_binary = binary.flag(parameters, "binary_data", f"{where}.", binary_default)
            if name not in names:
                names.append(name)
                flags.append(as_binary)
        if not names:
            return OUTPUT_NAMES, (binary_default,) * len(OUTPUT_NAMES)
        return tuple(names), tuple(flags)
