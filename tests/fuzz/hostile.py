"""Hostile request bodies and headers for /predict and V2 infer, as hypothesis strategies."""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field

import orjson
from hypothesis import strategies as st

from inference_image.schema import APS_FEATURES

from .conftest import FUZZ_MAX_BODY_BYTES

WIDTH = len(APS_FEATURES)
HEADER = "Inference-Header-Content-Length"

# Bare tokens no JSON parser should take as numbers, and their string forms.
HOSTILE_TOKENS = [
    b"1e309",
    b"-1e400",
    b"1" + b"0" * 400,  # 10**400 as an integer literal
    b"-" + b"9" * 5000,
    b"NaN",  # V2 infer: a missing value in data, 400 anywhere else; /predict: 400
    b"Infinity",
    b"-Infinity",
    b'"NaN"',
    b'"Infinity"',
    b'"-Infinity"',
    b"3.5e38",  # beyond float32
    b"true",
    b'"abc"',
    b'"na"',
    b"[]",
    b"{}",
    b"null",
    b'"\\ud800"',  # a lone surrogate
    b'"\xff\xfe"',  # invalid UTF-8
    b"0x10",
    b"01",
    b"1.",
    b"",
]
HOSTILE_SHAPES = [
    b"[1e309,170]",
    b"[10" + b"0" * 30 + b",170]",
    b"[-1,170]",
    b"[0,170]",
    b"[1,170,1]",
    b"[[1],170]",
]
CONTENT_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "APPLICATION/JSON",
    "application/octet-stream",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/jsonx",
    "",
    "\u00e9",
    None,
]


@dataclass
class HostileRequest:
    path: str
    body: bytes
    content_type: str | None = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    content_length: str | None = None  # None: the true length
    chunked: bool = False

    def __repr__(self) -> str:
        shown = self.body[:120] + (b"..." if len(self.body) > 120 else b"")
        return (
            f"HostileRequest({self.path}, {len(self.body)} bytes {shown!r}, "
            f"content_type={self.content_type!r}, headers={self.headers!r}, "
            f"content_length={self.content_length!r}, chunked={self.chunked})"
        )


def record_body(values: list[bytes], names: list[str] | None = None) -> bytes:
    names = names or list(APS_FEATURES)
    pairs = [orjson.dumps(name) + b":" + value for name, value in zip(names, values, strict=False)]
    return b"{" + b",".join(pairs) + b"}"


def v2_body(values: bytes, shape: bytes = b"[1,%d]" % WIDTH, datatype: bytes = b'"FP32"') -> bytes:
    return (
        b'{"inputs":[{"name":"input-0","shape":'
        + shape
        + b',"datatype":'
        + datatype
        + b',"data":['
        + values
        + b"]}]}"
    )


hostile_values = st.lists(
    st.one_of(
        st.sampled_from(HOSTILE_TOKENS),
        st.floats(allow_nan=False, allow_infinity=False).map(lambda x: repr(x).encode()),
        st.integers().map(lambda n: str(n).encode()),
        st.just(b"null"),
    ),
    min_size=WIDTH,
    max_size=WIDTH,
)
# Well-formed values now and then, so the fuzz also reaches the model and checks its answers.
good_values = st.lists(
    st.one_of(
        st.floats(width=32, allow_nan=False, allow_infinity=False).map(lambda x: repr(x).encode()),
        st.just(b"null"),
    ),
    min_size=WIDTH,
    max_size=WIDTH,
)
values_st = st.one_of(hostile_values, good_values)
names_st = st.lists(
    st.one_of(st.sampled_from(APS_FEATURES), st.text(max_size=12)), min_size=0, max_size=WIDTH + 2
)


@st.composite
def predict_bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["record", "names", "instances", "duplicates", "raw"]))
    values = draw(values_st)
    if kind == "record":
        return record_body(values)
    if kind == "names":  # unicode, missing and unknown feature names
        return record_body(values, draw(names_st))
    if kind == "instances":
        return (
            b'{"instances":[' + b",".join([record_body(values)] * draw(st.integers(0, 3))) + b"]}"
        )
    if kind == "duplicates":  # duplicate keys: the last one wins in orjson
        body = record_body(values)
        return body[:-1] + b',"aa_000":' + draw(st.sampled_from(HOSTILE_TOKENS)) + b"}"
    return draw(raw_bodies())


# Where a bare NaN may go in a V2 body besides the data (all refused: 400).
NAN_ELSEWHERE = [
    (b'"shape":[1,%d]' % WIDTH, b'"shape":[NaN,%d]' % WIDTH),
    (b'{"inputs":', b'{"id":NaN,"inputs":'),
    (b'{"inputs":', b'{"parameters":{"binary_data_output":NaN},"inputs":'),
    (b'{"inputs":', b'{"parameters":{"x":[NaN]},"inputs":'),
    (b'"datatype":', b'"parameters":{"y":NaN},"datatype":'),
    (b"]}]}", b']}],"outputs":[{"name":"label","parameters":{"z":NaN}}]}'),
]


@st.composite
def tritonclient_rows(draw: st.DrawFn) -> list[list[float | None]]:
    """Rows of float32 values and missing values (None), as tritonclient would send them."""
    n_rows = draw(st.integers(1, 3))
    value = st.one_of(st.floats(width=32, allow_nan=False, allow_infinity=False), st.none())
    return draw(
        st.lists(st.lists(value, min_size=WIDTH, max_size=WIDTH), min_size=n_rows, max_size=n_rows)
    )


def tritonclient_json(
    rows: list[list[float | None]], datatype: str = "FP32", nan: bool = True
) -> bytes:
    """A V2 body as tritonclient's JSON mode writes it (Python's json module: None -> NaN),
    or with ``nan=False`` the same body with null for the missing values."""
    data = [math.nan if nan and v is None else v for row in rows for v in row]
    document = {
        "inputs": [
            {"name": "input-0", "shape": [len(rows), WIDTH], "datatype": datatype, "data": data}
        ]
    }
    return json.dumps(document, separators=(",", ":")).encode()


@st.composite
def infer_bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["flat", "shape", "datatype", "raw", "nested", "tritonclient"]))
    values = b",".join(draw(values_st))
    if kind == "flat":
        return v2_body(values)
    if kind == "tritonclient":  # NaN for missing values; now and then a NaN out of place
        body = tritonclient_json(draw(tritonclient_rows()), draw(st.sampled_from(["FP32", "FP64"])))
        if draw(st.integers(0, 3)) == 0:
            old, new = draw(st.sampled_from(NAN_ELSEWHERE))
            body = body.replace(old, new, 1)
        return body
    if kind == "shape":
        shape = draw(
            st.sampled_from(
                [
                    *HOSTILE_TOKENS,
                    b"[1e309,170]",
                    b"[10" + b"0" * 30 + b",170]",
                    b"[-1,170]",
                    b"[0,170]",
                    b"[1,170,1]",
                    b"[[1],170]",
                ]
            )
        )
        return v2_body(values, shape=shape)
    if kind == "datatype":
        datatype = draw(
            st.sampled_from([b'"FP16"', b'"BYTES"', b"32", b"null", b'"fp32"', b'"FP32\\u0000"'])
        )
        return v2_body(values, datatype=datatype)
    if kind == "nested":
        return v2_body(b"[" + values + b"]")
    return draw(raw_bodies())


@st.composite
def raw_bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["deep", "giant", "empty", "bytes", "token", "utf8"]))
    if kind == "deep":
        depth = draw(st.sampled_from([1025, 10_000, 100_000]))
        return draw(st.sampled_from([b"[", b'{"a":'])) * depth
    if kind == "giant":
        return b'{"instances":[' + b"0," * (FUZZ_MAX_BODY_BYTES // 2) + b"0]}"
    if kind == "empty":
        return draw(st.sampled_from([b"", b" ", b"\n\r\t"]))
    if kind == "token":
        return draw(st.sampled_from(HOSTILE_TOKENS))
    if kind == "utf8":
        return b'{"\xff\xfe":1,"\xed\xa0\x80":2}'
    return draw(st.binary(max_size=300))


@st.composite
def binary_requests(draw: st.DrawFn, path: str) -> HostileRequest:
    """The binary tensor extension with truncated tensors and header lengths that lie."""
    rows = draw(st.integers(0, 3))
    datatype = draw(st.sampled_from(["FP32", "FP64", "FP16", "BYTES"]))
    itemsize = 8 if datatype == "FP64" else 4
    raw = draw(
        st.one_of(
            st.binary(max_size=rows * WIDTH * itemsize + 8),
            st.lists(
                st.floats(width=32) if itemsize == 4 else st.floats(),
                min_size=rows * WIDTH,
                max_size=rows * WIDTH,
            ).map(lambda xs: struct.pack(f"<{len(xs)}{'f' if itemsize == 4 else 'd'}", *xs)),
        )
    )
    announced = draw(st.one_of(st.just(len(raw)), st.integers(-5, 10**6)))
    header = {
        "inputs": [
            {
                "name": "input-0",
                "shape": [rows, WIDTH],
                "datatype": datatype,
                "parameters": {"binary_data_size": announced},
            }
        ],
        "parameters": {"binary_data_output": draw(st.sampled_from([True, False, 1, "yes"]))},
    }
    json_part = orjson.dumps(header)
    length = draw(
        st.one_of(
            st.just(str(len(json_part))),
            st.integers(-3, len(json_part) + len(raw) + 3).map(str),
            st.sampled_from(["", " 12", "1e3", "0x10", "9" * 30, "9" * 5000, "\u0661\u0662", "-0"]),
        )
    )
    return HostileRequest(
        path=path,
        body=json_part + raw,
        content_type=draw(
            st.sampled_from(["application/octet-stream", None, "application/json", "text/plain"])
        ),
        headers={HEADER: length},
    )


@st.composite
def hostile_requests(draw: st.DrawFn, paths: list[str]) -> HostileRequest:
    path = draw(st.sampled_from(paths))
    if path.endswith("/infer") and draw(st.booleans()):
        request = draw(binary_requests(path))
    else:
        body = draw(predict_bodies() if path == "/predict" else infer_bodies())
        request = HostileRequest(path=path, body=body)
        if path.endswith("/infer") and draw(st.booleans()):
            request.content_type = None  # as tritonclient's JSON mode sends it
        if draw(st.integers(0, 4)) == 0:
            request.content_type = draw(st.sampled_from(CONTENT_TYPES))
    framing = draw(
        st.sampled_from(["length", "length", "chunked", "lie-long", "lie-short", "huge"])
    )
    if framing == "chunked":
        request.chunked = True
    elif framing == "lie-long":
        request.content_length = str(len(request.body) + draw(st.integers(1, 100)))
    elif framing == "lie-short":
        request.content_length = str(max(0, len(request.body) - draw(st.integers(1, 100))))
    elif framing == "huge":
        request.content_length = draw(st.sampled_from(["9" * 30, "9" * 5000, "-1", "1e3", " 5"]))
    return request
