"""The request parsers, called directly (no Flask)."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import orjson
import pytest

from inference_image.schema import APS_FEATURES
from inference_image.serving.payloads import (
    F32_OVERFLOW,
    OUTPUT_NAMES,
    InferParser,
    PayloadError,
    RecordParser,
    describe,
    parse_infer_json,
    parse_json,
    read_infer_body,
)

WIDTH = len(APS_FEATURES)
F32_MAX = float(np.finfo(np.float32).max)


def row_values(seed: int = 0) -> list[float | None]:
    rng = np.random.default_rng(seed)
    values: list[float | None] = [float(v) for v in rng.normal(0, 1000, WIDTH)]
    values[3] = None
    values[10] = 42  # an int
    return values


def record(seed: int = 0, **overrides: object) -> dict[str, object]:
    rec: dict[str, object] = dict(zip(APS_FEATURES, row_values(seed), strict=True))
    rec.update(overrides)
    return rec


def expected_row(rec: dict[str, object]) -> np.ndarray:
    return np.array(
        [math.nan if rec[n] in (None, "na") else float(rec[n]) for n in APS_FEATURES],  # type: ignore[arg-type]
        dtype=np.float32,
    )


@pytest.fixture
def records() -> RecordParser:
    return RecordParser(APS_FEATURES, max_rows=4)


@pytest.fixture
def tensors() -> InferParser:
    return InferParser(APS_FEATURES, max_rows=4)


def reject(call, *args: object, status: int = 400) -> str:
    with pytest.raises(PayloadError) as info:
        call(*args)
    assert info.value.status == status, info.value.message
    return info.value.message


# --- parse_json ------------------------------------------------------------------------


def test_parse_json_accepts_utf8_json() -> None:
    assert parse_json(b'{"a": [1, 2.5, null, "na"]}') == {"a": [1, 2.5, None, "na"]}


@pytest.mark.parametrize(
    "body",
    [b"", b"{", b"NaN", b"[Infinity]", b"[-Infinity]", b"[1e400]", b"\xff\xfe", b"{'a': 1}"],
)
def test_parse_json_rejects_invalid_documents(body: bytes) -> None:
    message = reject(parse_json, body)
    assert "request body" in message


def test_describe_tells_booleans_from_numbers() -> None:
    assert describe(True) == "boolean true"
    assert describe(1) == "number 1"
    assert describe("x" * 100).startswith("string 'xxx") and len(describe("x" * 100)) < 60
    assert describe(None) == "null"
    assert describe(math.nan) == "NaN"
    assert describe([1, 2]) == "array of 2 items"
    assert describe({}) == "object"


# --- RecordParser ----------------------------------------------------------------------


def test_single_record_gives_one_row_in_schema_order(records: RecordParser) -> None:
    rec = record()
    shuffled = dict(reversed(list(rec.items())))  # key order must not matter
    matrix = records.parse(shuffled)
    assert matrix.dtype == np.float32 and matrix.shape == (1, WIDTH)
    np.testing.assert_array_equal(matrix[0], expected_row(rec))
    assert np.isnan(matrix[0, 3]) and matrix[0, 10] == 42


def test_instances_give_one_row_each(records: RecordParser) -> None:
    recs = [record(seed) for seed in range(3)]
    matrix = records.parse({"instances": recs})
    assert matrix.shape == (3, WIDTH)
    for row, rec in zip(matrix, recs, strict=True):
        np.testing.assert_array_equal(row, expected_row(rec))


def test_na_null_and_numbers_mix(records: RecordParser) -> None:
    rec = record(aa_000="na", ab_000=None, ac_000=0, ad_000=-1.5e38, ae_000=3.4028235e38)
    row = records.parse(rec)[0]
    assert np.isnan(row[0]) and np.isnan(row[1])
    assert row[2] == 0 and row[3] == np.float32(-1.5e38) and row[4] == np.float32(F32_MAX)


def test_slow_path_gives_the_same_matrix(records: RecordParser) -> None:
    recs = [record(1, aa_000="na"), record(2)]
    fast = records.parse({"instances": recs})
    slow = records._parse_slowly(recs, single=False)
    np.testing.assert_array_equal(fast, slow)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (True, "got boolean true"),
        (False, "got boolean false"),
        ("abc", "got string 'abc'"),
        ("NaN", "got string 'NaN'"),
        ("Infinity", "got string 'Infinity'"),
        ("1.5", "got string '1.5'"),
        ("NA", "got string 'NA'"),
        ("", "got string ''"),
        ([1.0], "got array of 1 items"),
        ({"v": 1}, "got object"),
        (1e39, "outside the float32 range"),
        (-1e39, "outside the float32 range"),
        (F32_OVERFLOW, "outside the float32 range"),
        (2**130, "outside the float32 range"),
    ],
)
def test_bad_values_name_the_record_and_field(
    records: RecordParser, value: object, fragment: str
) -> None:
    recs = [record(0), record(1), record(2), record(3, ab_000=value)]
    message = reject(records.parse, {"instances": recs})
    assert message.startswith("instances[3].ab_000: "), message
    assert fragment in message


def test_bad_value_message_is_exact(records: RecordParser) -> None:
    recs = [record(0), record(1), record(2), record(3, ab_000="abc")]
    assert reject(records.parse, {"instances": recs}) == (
        "instances[3].ab_000: expected a number, null or \"na\", got string 'abc'"
    )


def test_bad_value_in_single_record_names_the_field(records: RecordParser) -> None:
    assert reject(records.parse, record(ag_003=True)).startswith("ag_003: expected a number")


def test_unknown_and_missing_features_are_listed(records: RecordParser) -> None:
    rec = record(zz_001=1, zz_002=2)
    del rec["aa_000"]
    message = reject(records.parse, {"instances": [record(), rec]})
    assert message.startswith("instances[1]: ")
    assert "2 unknown features: 'zz_001', 'zz_002'" in message
    assert "1 missing feature: 'aa_000'" in message


def test_long_lists_show_the_first_few_and_a_count(records: RecordParser) -> None:
    message = reject(records.parse, {"instances": [{"foo": 1}]})
    assert "1 unknown feature: 'foo'" in message
    assert f"{WIDTH} missing features: 'aa_000', 'ab_000', 'ac_000', 'ad_000', 'ae_000'" in message
    assert f"and {WIDTH - 5} more" in message


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        ([], "request body: expected a JSON object"),
        ("text", "request body: expected a JSON object"),
        (None, "request body: expected a JSON object"),
        ({"instances": []}, "instances: expected at least one record"),
        ({"instances": {}}, "instances: expected an array of records"),
        ({"instances": [[1.0] * WIDTH]}, "instances[0]: expected an object"),
        ({"instances": [None]}, "instances[0]: expected an object"),
        ({"instances": [record()], "extra": 1}, "unknown field 'extra'"),
        ({}, f"{WIDTH} missing features"),
    ],
)
def test_bad_documents(records: RecordParser, document: object, fragment: str) -> None:
    assert fragment in reject(records.parse, document)


def test_too_many_records_is_413(records: RecordParser) -> None:
    message = reject(records.parse, {"instances": [record()] * 5}, status=413)
    assert "instances: 5 records exceed the limit of 4" in message


def test_unhashable_value_after_na_falls_back_to_a_message(records: RecordParser) -> None:
    message = reject(records.parse, record(aa_000="na", ab_000=[1]))
    assert message.startswith("ab_000: ") and "array" in message


# --- InferParser -----------------------------------------------------------------------


def tensor_request(data: object, shape: object = None, **tensor: object) -> dict[str, object]:
    body = {
        "name": "input-0",
        "shape": [1, WIDTH] if shape is None else shape,
        "datatype": "FP32",
        "data": data,
    }
    body.update(tensor)
    return {"inputs": [body]}


def test_flat_and_nested_data_give_the_same_rows(tensors: InferParser) -> None:
    rows = [row_values(1), row_values(2)]
    flat = tensors.parse(tensor_request(rows[0] + rows[1], [2, WIDTH]))
    nested = tensors.parse(tensor_request(rows, [2, WIDTH]))
    np.testing.assert_array_equal(flat.rows, nested.rows)
    assert flat.rows.shape == (2, WIDTH) and flat.rows.dtype == np.float32
    assert np.isnan(flat.rows[0, 3])
    assert flat.outputs == OUTPUT_NAMES and flat.id is None


def test_one_dimensional_shape_is_one_row(tensors: InferParser) -> None:
    parsed = tensors.parse(tensor_request(row_values(), [WIDTH], datatype="FP64"))
    assert parsed.rows.shape == (1, WIDTH)


def test_id_parameters_and_outputs_subset(tensors: InferParser) -> None:
    body = tensor_request(row_values())
    body.update(id="req-7", parameters={"x": 1}, outputs=[{"name": "label"}, {"name": "label"}])
    parsed = tensors.parse(body)
    assert parsed.id == "req-7" and parsed.outputs == ("label",)


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda b: b["inputs"][0].update(datatype="INT64"), "inputs[0].datatype: unsupported"),
        (lambda b: b["inputs"][0].update(datatype="BYTES"), "inputs[0].datatype: unsupported"),
        (lambda b: b["inputs"][0].update(datatype=32), "inputs[0].datatype: expected a string"),
        (lambda b: b["inputs"][0].update(shape=[2, WIDTH]), "inputs[0].data: expected 340 values"),
        (lambda b: b["inputs"][0].update(shape=[1, 169]), "inputs[0].shape: expected [N, 170]"),
        (lambda b: b["inputs"][0].update(shape=[0, WIDTH]), "inputs[0].shape: expected at least"),
        (lambda b: b["inputs"][0].update(shape=[-1, WIDTH]), "inputs[0].shape: expected [N, 170]"),
        (lambda b: b["inputs"][0].update(shape=[1.0, WIDTH]), "inputs[0].shape[0]: expected an"),
        (lambda b: b["inputs"][0].update(shape=[True, WIDTH]), "inputs[0].shape[0]: expected an"),
        (lambda b: b["inputs"][0].update(shape=[1, WIDTH, 1]), "inputs[0].shape: expected [N"),
        (lambda b: b["inputs"][0].update(shape=[]), "inputs[0].shape: expected [N"),
        (lambda b: b["inputs"][0].update(shape="1,170"), "inputs[0].shape: expected an array"),
        (lambda b: b["inputs"][0].update(data={"a": 1}), "inputs[0].data: expected an array"),
        (lambda b: b["inputs"][0].update(data=[]), "inputs[0].data: expected 170 values"),
        (lambda b: b["inputs"][0].pop("data"), "inputs[0].data: required field is missing"),
        (lambda b: b["inputs"][0].pop("name"), "inputs[0].name: required field is missing"),
        (lambda b: b["inputs"][0].update(extra=1), "inputs[0]: unknown field 'extra'"),
        (lambda b: b["inputs"][0].update(parameters=[]), "inputs[0].parameters: expected an"),
        (lambda b: b["inputs"][0]["data"].__setitem__(5, "na"), "inputs[0].data[5] (row 0, "),
        (lambda b: b["inputs"][0]["data"].__setitem__(5, True), "feature af_000): expected a"),
        (lambda b: b["inputs"][0]["data"].__setitem__(0, 1e39), "data[0] (row 0, feature aa_000"),
        (lambda b: b["inputs"][0]["data"].__setitem__(1, [1]), "inputs[0].data[1] (row 0"),
        (lambda b: b.update(inputs=[]), "inputs: this model takes exactly 1 input tensor, got 0"),
        (lambda b: b.update(inputs=b["inputs"] * 2), "exactly 1 input tensor, got 2"),
        (lambda b: b.update(inputs=[[]]), "inputs[0]: expected an input tensor object"),
        (lambda b: b.update(inputs={}), "inputs: expected an array"),
        (lambda b: b.pop("inputs"), "inputs: required field is missing"),
        (lambda b: b.update(id=5), "id: expected a string, got number 5"),
        (lambda b: b.update(id=None), "id: expected a string, got null"),
        (lambda b: b.update(outputs=[{"name": "x"}]), "outputs[0].name: unknown output 'x'"),
        (lambda b: b.update(outputs=["label"]), "outputs[0]: expected an object"),
        (lambda b: b.update(outputs={}), "outputs: expected an array"),
        (lambda b: b.update(extra=1), "request body: unknown field 'extra'"),
    ],
)
def test_bad_v2_requests_name_the_field(tensors: InferParser, mutate, fragment: str) -> None:
    body = tensor_request(row_values())
    mutate(body)
    assert fragment in reject(tensors.parse, body)


def test_nested_rows_must_have_the_full_width(tensors: InferParser) -> None:
    rows = [row_values(1), row_values(2)[:-1]]
    message = reject(tensors.parse, tensor_request(rows, [2, WIDTH]))
    assert message == "inputs[0].data[1]: expected 170 values per row, got 169"


def test_nested_error_positions_use_row_and_column(tensors: InferParser) -> None:
    rows = [row_values(1), row_values(2)]
    rows[1][7] = "x"
    message = reject(tensors.parse, tensor_request(rows, [2, WIDTH]))
    assert message.startswith("inputs[0].data[1][7] (row 1, feature ag_001): ")


def test_too_many_rows_is_413_before_reading_data(tensors: InferParser) -> None:
    message = reject(tensors.parse, tensor_request([], [5, WIDTH]), status=413)
    assert "inputs[0].shape: 5 rows exceed the limit of 4" in message
    reject(tensors.parse, tensor_request([], [2**70, WIDTH]), status=413)
    # JSON integers beyond 64 bits arrive as floats: not a valid dimension.
    big = parse_json(
        b'{"inputs": [{"name": "x", "shape": [18446744073709551616, 170], '
        b'"datatype": "FP32", "data": []}]}'
    )
    assert "inputs[0].shape[0]: expected an integer" in reject(tensors.parse, big)


def test_documents_from_json_roundtrip(tensors: InferParser) -> None:
    body = orjson.dumps(tensor_request(row_values()))
    assert tensors.parse(parse_json(body)).rows.shape == (1, WIDTH)


# --- V2 infer: Content-Type sniffing ---------------------------------------------------

HEADER_ENVIRON = "HTTP_INFERENCE_HEADER_CONTENT_LENGTH"


def infer_environ(body: bytes, content_type: str | None, header: int | None = None) -> dict:
    environ: dict[str, object] = {"wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body))}
    if content_type is not None:
        environ["CONTENT_TYPE"] = content_type
    if header is not None:
        environ[HEADER_ENVIRON] = str(header)
    return environ


@pytest.mark.parametrize(
    "content_type",
    [None, "", "application/json", "application/json; charset=utf-8", "APPLICATION/JSON"],
)
def test_v2_body_without_the_binary_header_is_json(content_type: str | None) -> None:
    body = orjson.dumps(tensor_request(row_values()))
    document, tail = read_infer_body(infer_environ(body, content_type), 1 << 20)
    assert document == orjson.loads(body) and tail is None


@pytest.mark.parametrize("content_type", [None, "application/octet-stream", "application/json"])
def test_v2_body_with_the_binary_header_is_the_extension(content_type: str | None) -> None:
    raw = np.ones(WIDTH, "<f4").tobytes()
    head = orjson.dumps(tensor_request(None, parameters={"binary_data_size": len(raw)}))
    document, tail = read_infer_body(infer_environ(head + raw, content_type, len(head)), 1 << 20)
    assert document == orjson.loads(head) and bytes(tail) == raw


@pytest.mark.parametrize(
    ("content_type", "header", "fragments"),
    [
        ("text/plain", None, ["application/json (or none)", "'text/plain'"]),
        ("application/jsonx", None, ["'application/jsonx'"]),
        ("application/octet-stream", None, ["'application/octet-stream'", "needs the Inference"]),
        ("text/plain", 10, ["application/octet-stream (or none)", "'text/plain'"]),
    ],
)
def test_other_content_types_are_415_naming_them(
    content_type: str, header: int | None, fragments: list[str]
) -> None:
    body = orjson.dumps(tensor_request(row_values()))
    message = reject(
        read_infer_body, infer_environ(body, content_type, header), 1 << 20, status=415
    )
    for fragment in fragments:
        assert fragment in message, message


def test_binary_data_sent_without_its_header_gets_a_hint() -> None:
    raw = np.full(WIDTH, np.nan, "<f4").tobytes()  # not UTF-8
    head = orjson.dumps(tensor_request(None, parameters={"binary_data_size": len(raw)}))
    for body in (head + raw, head + b"0" * 8):
        message = reject(read_infer_body, infer_environ(body, None), 1 << 20)
        assert message.startswith("request body is not valid JSON") and "the Inference" in message


# --- V2 infer: NaN in data is a missing value --------------------------------------------


def nan_text(document: object) -> bytes:
    """As Python's json module (and tritonclient's JSON mode) writes it: NaN tokens."""
    return json.dumps(document).encode()


def with_nan(values: list) -> list:
    return [with_nan(v) if type(v) is list else math.nan if v is None else v for v in values]


@pytest.mark.parametrize("datatype", ["FP32", "FP64"])
@pytest.mark.parametrize("nested", [False, True])
def test_nan_in_data_gives_the_rows_null_gives(
    tensors: InferParser, datatype: str, nested: bool
) -> None:
    rows = [row_values(1), row_values(2)]
    rows[1] = [None] * WIDTH  # an all-missing row
    data = rows if nested else rows[0] + rows[1]
    by_null = tensors.parse(parse_infer_json(orjson.dumps(tensor_request(data, [2, WIDTH]))))
    body = nan_text(tensor_request(with_nan(data), [2, WIDTH], datatype=datatype))
    assert b"NaN" in body and b"null" not in body
    by_nan = tensors.parse(parse_infer_json(body))
    np.testing.assert_array_equal(by_nan.rows, by_null.rows)
    assert np.isnan(by_nan.rows[1]).all() and np.isnan(by_nan.rows[0, 3])
    assert np.isnan(by_nan.rows).sum() == WIDTH + 1


def test_bodies_without_nan_are_parsed_by_orjson_unchanged() -> None:
    body = orjson.dumps(tensor_request(row_values(), id="NaN", parameters={"NaN": "NaN"}))
    assert parse_infer_json(body) == orjson.loads(body)


def test_the_nan_parse_reads_numbers_as_orjson_does(tensors: InferParser) -> None:
    """A NaN in data sends the body to the json module: the rest must read the same."""
    big = b"18446744073709551616"  # beyond 64 bits: orjson reads a float
    head = (
        b'{"inputs": [{"name": "x", "datatype": "FP32", "parameters": {"n": -9223372036854775809}, '
    )
    for missing in (b"null", b"NaN"):
        document = parse_infer_json(
            head + b'"shape": [' + big + b", 170], " + b'"data": [' + missing + b"]}]}"
        )
        assert document["inputs"][0]["parameters"]["n"] == -9.223372036854776e18
        assert "inputs[0].shape[0]: expected an integer" in reject(tensors.parse, document)
    values = [b"1", b"NaN", b"18446744073709551615", b"-3.5e10", b"18446744073709551616"]
    values += [b"0"] * (WIDTH - len(values))
    body = b'{"inputs": [{"name": "x", "shape": [170], "datatype": "FP64", "data": [%s]}]}'
    by_nan = tensors.parse(parse_infer_json(body % b",".join(values))).rows
    values[1] = b"null"
    np.testing.assert_array_equal(by_nan, tensors.parse(parse_json(body % b",".join(values))).rows)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"[NaN]", "request body[0]: NaN is only accepted in an input tensor's data"),
        (b'{"inputs": [{"data": [NaN]}], "id": NaN}', "id: NaN is only accepted"),
        (b'{"inputs": [{"data": [NaN], "shape": [NaN, 170]}]}', "inputs[0].shape[0]: NaN is only"),
        (
            b'{"inputs": [{"data": [1], "parameters": {"a": [NaN]}}]}',
            "inputs[0].parameters.a[0]: NaN",
        ),
        (
            b'{"inputs": [{"data": [NaN]}], "parameters": {"x": {"data": NaN}}}',
            "parameters.x.data: NaN",
        ),
        (b'{"inputs": [{"data": [NaN]}], "outputs": [{"name": NaN}]}', "outputs[0].name: NaN"),
        (b'{"inputs": [{"data": [NaN, Infinity]}]}', "not valid JSON: Infinity is not JSON"),
        (b'{"inputs": [{"data": [NaN, -Infinity]}]}', "not valid JSON: -Infinity is not JSON"),
        (b'{"inputs": [{"data": [Infinity, NaN]}]}', "not valid JSON: Infinity is not JSON"),
        (b'{"inputs": [{"data": [-Infinity]}]}', "not valid JSON: -Infinity is not JSON"),
        (b'{"inputs": [{"data": [-NaN]}]}', "not valid JSON"),
        (b'{"inputs": [{"data": [NaNa]}]}', "not valid JSON"),
        (b'{"inputs": [{"data": [NaN]}]', "not valid JSON"),
        (b'{"inputs": [{"data": [NaN]}]} x', "not valid JSON"),
        (b'{"inputs": [{"data": [NaN]}], "shape": [1e400]}', "shape[0]: number is infinity"),
        (b'{"inputs": [{"data": [NaN]}], "n": 1' + b"0" * 400 + b"}", "n: number is infinity"),
        (b'{"inputs": [{"data": [NaN, 1' + b"0" * 5000 + b"]}]}", "not valid JSON"),
        (
            b'{"inputs": [{"data": [NaN]}], "id": "\\ud800"}',
            "id: the string holds a lone surrogate",
        ),
        (b'{"inputs": [{"data": [NaN]}], "\\udc00": 1}', "a key holds a lone surrogate"),
        (b'{"inputs": [{"data": [NaN, "\xff"]}]}', "not valid JSON"),
        (b'{"inputs": [{"data": [NaN]}], "x": ' + b"[" * 5000 + b"]" * 5000 + b"}", "too deeply"),
    ],
)
def test_nan_elsewhere_infinities_and_invalid_json_are_refused(body: bytes, fragment: str) -> None:
    message = reject(parse_infer_json, body)
    assert fragment in message, message


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b'{"aa_000": NaN}', 'NaN is not JSON: send null (or "na") for a missing value'),
        (b'{"instances": [{"aa_000": Infinity}]}', "Infinity is not JSON"),
        (b'{"aa_000": -Infinity}', "-Infinity is not JSON"),
    ],
)
def test_parse_json_keeps_refusing_nan_and_infinity_by_name(body: bytes, fragment: str) -> None:
    message = reject(parse_json, body)
    assert message.startswith("request body is not valid JSON: ") and fragment in message


def test_nan_in_data_reaches_the_slow_path_as_missing(tensors: InferParser) -> None:
    data = with_nan(row_values())
    data[5] = "x"
    message = reject(tensors.parse, parse_infer_json(nan_text(tensor_request(data))))
    assert message.startswith("inputs[0].data[5] (row 0, feature af_000)"), message
    assert "data[3]" not in message  # the NaN at 3 is a missing value, not a problem
