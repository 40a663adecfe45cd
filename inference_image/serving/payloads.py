"""Turn request bodies into float32 feature matrices, or into errors that name the field.

Every parser has a fast path (one C-level gather, one type scan, one NumPy conversion) for
well-formed requests, and a slow path that walks the request value by value only to
produce the error message (or, defensively, the same matrix). Body reading works on the
WSGI environ, so nothing here depends on Flask.
"""

from __future__ import annotations

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
    "describe",
    "parse_json",
    "read_body",
    "read_json_body",
]

JSON_MEDIA_TYPE = "application/json"
OUTPUT_NAMES = ("probability", "label")
V2_DATATYPES = ("FP32", "FP64")
_NUMERIC_TYPES = frozenset({int, float, type(None)})
_NA_TO_NONE: dict[Any, None] = {MISSING_TOKEN: None}
_SHOW = 5  # names listed in an error message before "and N more"


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


def _read_body(environ: Mapping[str, Any], limit: int) -> bytes:
    stream = environ["wsgi.input"]
    raw_length = environ.get("CONTENT_LENGTH") or ""
    chunked = "chunked" in (environ.get("HTTP_TRANSFER_ENCODING") or "").lower()
    if raw_length and not chunked:
        length = byte_count(raw_length)
        if length is None:
            raise PayloadError(f"invalid Content-Length header {raw_length[:20]!r}")
        if length > limit:
            raise PayloadError(
                f"request body of {shown_count(raw_length.lstrip('0'))} bytes exceeds the "
                f"limit of {limit} bytes",
                status=413,
            )
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


def parse_json(body: bytes) -> Any:
    """Parse a request body (UTF-8 JSON; NaN and Infinity literals are rejected)."""
    if not body:
        raise PayloadError("request body is empty: expected a JSON document")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise PayloadError(f"request body is not valid JSON: {exc}") from None


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
