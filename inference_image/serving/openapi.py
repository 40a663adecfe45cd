"""The OpenAPI 3.0.3 description of the serving endpoints, built for one model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import binary
from .payloads import F32_OVERFLOW, OUTPUT_NAMES, V2_DATATYPES

_JSON = "application/json"
_SCHEME = "bearerAuth"
_BINARY_DESCRIPTION = (
    "Open Inference Protocol binary tensor data extension (as tritonclient.http sends it): "
    f"the first `{binary.HEADER}` bytes are an InferenceRequest in JSON whose input has "
    "`parameters.binary_data_size` instead of `data`; that many bytes follow, the rows' "
    "values little-endian and row-major (FP32: 4 bytes each, FP64: 8; NaN = missing). Set "
    "`parameters.binary_data_output` (request) or `parameters.binary_data` (output) to true "
    "to get outputs the same way."
)
_INFER_BODY_DESCRIPTION = (
    "An InferenceRequest in JSON, or the binary tensor data extension. A body without "
    f"`{binary.HEADER}` is JSON: its Content-Type may be application/json or omitted "
    "altogether (tritonclient.http's JSON mode sends none). In the `data` of an FP32/FP64 "
    "input, null and the bare token `NaN` (as Python's json module and tritonclient write "
    "it; not strict JSON) both mean a missing value, exactly as NaN in binary data does. "
    "`NaN` anywhere else, `Infinity` and `-Infinity` are refused (400)."
)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": schema}}}


def _errors(*codes: int, infer: bool = False) -> dict[str, Any]:
    reasons = {
        400: "Malformed request; the message names the offending field",
        401: "Missing or wrong bearer token (only when the server requires one)",
        404: "Unknown model, version or path",
        408: "The request body did not arrive within the request time limit",
        413: "Body larger than the byte limit, or more rows than the row limit",
        415: (
            "Content-Type is neither application/json nor absent (with "
            f"{binary.HEADER}: application/octet-stream, application/json or absent)"
            if infer
            else "Content-Type is not application/json"
        ),
        503: "The model is not ready (its smoke vectors did not reproduce)",
    }
    return {str(code): _json(_ref("Error"), reasons[code]) for code in codes}


def _schemas(feature_names: Sequence[str], max_rows: int) -> dict[str, Any]:
    width = len(feature_names)
    # Exactly the server's rule: finite doubles that do not round to infinity in float32.
    number = {
        "type": "number",
        "minimum": -F32_OVERFLOW,
        "exclusiveMinimum": True,
        "maximum": F32_OVERFLOW,
        "exclusiveMaximum": True,
    }
    feature_value = {
        "description": 'A number (float32 range), or null / "na" for a missing value',
        "anyOf": [{**number, "nullable": True}, {"type": "string", "enum": ["na"]}],
    }
    v2_value = {
        **number,
        "nullable": True,
        "description": "A number (float32 range); null or the bare token NaN for a missing value",
    }
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string"}},
        },
        "Record": {
            "type": "object",
            "description": f"All {width} features of one truck reading, no others",
            "required": list(feature_names),
            "additionalProperties": False,
            "properties": {name: feature_value for name in feature_names},
        },
        "Instances": {
            "type": "object",
            "required": ["instances"],
            "additionalProperties": False,
            "properties": {
                "instances": {
                    "type": "array",
                    "description": f"At most {max_rows} records (more: 413)",
                    "minItems": 1,
                    "maxItems": max_rows,
                    "items": _ref("Record"),
                }
            },
        },
        "PredictResponse": {
            "type": "object",
            "required": ["model_version", "predictions"],
            "properties": {
                "model_version": {"type": "string"},
                "predictions": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["label", "probability"],
                        "properties": {
                            "label": {"type": "string", "enum": ["neg", "pos"]},
                            "probability": {"type": "number", "minimum": 0, "maximum": 1},
                        },
                    },
                },
            },
        },
        "InferenceRequest": {
            "type": "object",
            "required": ["inputs"],
            "additionalProperties": False,
            "properties": {
                "id": {"type": "string"},
                "parameters": {
                    "type": "object",
                    "properties": {"binary_data_output": {"type": "boolean"}},
                },
                "inputs": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 1,
                    "items": _ref("RequestInput"),
                },
                "outputs": {"type": "array", "items": _ref("RequestOutput")},
            },
        },
        "RequestInput": {
            "type": "object",
            "description": (
                f"Rows of {width} features in schema order; data holds shape[0] x {width} "
                "values (flat, or one array per row)"
            ),
            "required": ["name", "shape", "datatype", "data"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string"},
                "shape": {
                    "description": (
                        f"[N, {width}], or [{width}] for one row; N at most {max_rows} "
                        "(more: 413). OpenAPI 3.0 cannot say that the second dimension must "
                        f"be {width}, nor that data must hold N x {width} values."
                    ),
                    "oneOf": [
                        {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": 1,
                            "items": {"type": "integer", "enum": [width]},
                        },
                        {
                            "type": "array",
                            "minItems": 2,
                            "maxItems": 2,
                            "items": {"type": "integer", "minimum": 1},
                        },
                    ],
                },
                "datatype": {"type": "string", "enum": list(V2_DATATYPES)},
                "parameters": {"type": "object"},
                "data": {
                    "description": (
                        "Flat values, or one array of values per row (not mixed); null or NaN "
                        "(a bare token, as tritonclient's JSON mode writes it) = missing"
                    ),
                    "oneOf": [
                        {"type": "array", "minItems": 1, "items": v2_value},
                        {
                            "type": "array",
                            "minItems": 1,
                            "items": {
                                "type": "array",
                                "minItems": width,
                                "maxItems": width,
                                "items": v2_value,
                            },
                        },
                    ],
                },
            },
        },
        "RequestOutput": {
            "type": "object",
            "required": ["name"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "enum": list(OUTPUT_NAMES)},
                "parameters": {
                    "type": "object",
                    "properties": {"binary_data": {"type": "boolean"}},
                },
            },
        },
        "InferenceResponse": {
            "type": "object",
            "required": ["model_name", "outputs"],
            "properties": {
                "model_name": {"type": "string"},
                "model_version": {"type": "string"},
                "id": {"type": "string"},
                "outputs": {"type": "array", "items": _ref("ResponseOutput")},
            },
        },
        "ResponseOutput": {
            "type": "object",
            "required": ["name", "datatype", "shape", "data"],
            "properties": {
                "name": {"type": "string", "enum": list(OUTPUT_NAMES)},
                "datatype": {"type": "string", "enum": ["FP32", "BYTES"]},
                "shape": {"type": "array", "items": {"type": "integer"}},
                "data": {
                    "type": "array",
                    "items": {"anyOf": [{"type": "number"}, {"type": "string"}]},
                },
            },
        },
        "TensorMetadata": {
            "type": "object",
            "required": ["name", "datatype", "shape"],
            "properties": {
                "name": {"type": "string"},
                "datatype": {"type": "string"},
                "shape": {"type": "array", "items": {"type": "integer"}},
            },
        },
        "ModelMetadata": {
            "type": "object",
            "required": ["name", "versions", "platform", "inputs", "outputs"],
            "properties": {
                "name": {"type": "string"},
                "versions": {"type": "array", "items": {"type": "string"}},
                "platform": {"type": "string"},
                "inputs": {"type": "array", "items": _ref("TensorMetadata")},
                "outputs": {"type": "array", "items": _ref("TensorMetadata")},
                "parameters": {
                    "type": "object",
                    "properties": {
                        "threshold": {"type": "number"},
                        "bundle_sha256": {"type": "string"},
                        "features": {"type": "array", "items": {"type": "string"}},
                    },
                },
            },
        },
        "ServerMetadata": {
            "type": "object",
            "required": ["name", "version", "extensions"],
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "extensions": {"type": "array", "items": {"type": "string"}},
            },
        },
        "Live": {
            "type": "object",
            "required": ["live"],
            "properties": {"live": {"type": "boolean"}},
        },
        "Ready": {
            "type": "object",
            "required": ["ready"],
            "properties": {"ready": {"type": "boolean"}, "reason": {"type": "string"}},
        },
    }


def _example_row(width: int) -> list[float | None]:
    return [None if column % 10 == 0 else float(column) for column in range(width)]


def build_openapi(
    feature_names: Sequence[str],
    model_name: str,
    model_version: str,
    server_version: str,
    max_rows: int,
    requires_token: bool = False,
) -> dict[str, Any]:
    """The OpenAPI document served at /openapi.json; with ``requires_token`` the endpoints
    that run the model require the bearer token (health, metadata and metrics never do)."""
    width = len(feature_names)
    model = f"/v2/models/{model_name}"
    versioned = f"{model}/versions/{{version}}"
    version_param = {
        "name": "version",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "enum": [model_version]},
    }
    row = _example_row(width)
    predict_body = {
        "required": True,
        "content": {
            _JSON: {
                "schema": {"oneOf": [_ref("Record"), _ref("Instances")]},
                "example": {"instances": [dict(zip(feature_names, row, strict=True))]},
            }
        },
    }
    infer_body = {
        "required": True,
        "description": _INFER_BODY_DESCRIPTION,
        "content": {
            _JSON: {
                "schema": _ref("InferenceRequest"),
                "example": {
                    "id": "example-1",
                    "inputs": [
                        {"name": "input-0", "shape": [1, width], "datatype": "FP32", "data": row}
                    ],
                },
            },
            binary.MEDIA_TYPE: {
                "schema": {
                    "type": "string",
                    "format": "binary",
                    "description": _BINARY_DESCRIPTION,
                }
            },
        },
    }
    header_param = {
        "name": binary.HEADER,
        "in": "header",
        "required": False,
        "description": (
            "Byte length of the JSON part of a binary request (or response); a request "
            "without it is plain JSON"
        ),
        "schema": {"type": "integer", "minimum": 0},
    }

    security: dict[str, Any] = {"security": [{_SCHEME: []}]} if requires_token else {}

    def guarded(*codes: int) -> list[int]:
        return sorted({*codes, 401}) if requires_token else list(codes)

    def get(summary: str, schema: str, *errors: int, params: bool = False) -> dict[str, Any]:
        operation: dict[str, Any] = {
            "summary": summary,
            "responses": {"200": _json(_ref(schema), "OK"), **_errors(*errors)},
        }
        if params:
            operation["parameters"] = [version_param]
        return {"get": operation}

    def infer(params: bool) -> dict[str, Any]:
        ok = _json(_ref("InferenceResponse"), "Probabilities and labels")
        ok["content"][binary.MEDIA_TYPE] = {
            "schema": {
                "type": "string",
                "format": "binary",
                "description": "When binary outputs were requested: " + _BINARY_DESCRIPTION,
            }
        }
        ok["headers"] = {
            binary.HEADER: {
                "description": "Present on binary responses: byte length of the JSON part",
                "schema": {"type": "integer"},
            }
        }
        operation: dict[str, Any] = {
            "summary": "Open Inference Protocol V2 inference",
            "parameters": [header_param],
            "requestBody": infer_body,
            "responses": {
                "200": ok,
                **_errors(*guarded(400, 404, 408, 413, 415, 503), infer=True),
            },
            **security,
        }
        if params:
            operation["parameters"] = [version_param, header_param]
        return {"post": operation}

    ready_responses = {
        "200": _json(_ref("Ready"), "Ready"),
        "503": _json(_ref("Ready"), "Not ready, with the reason"),
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "LinkEdge APS inference server",
            "version": server_version,
            "description": (
                f"Serves model {model_name!r} version {model_version!r}. Feature values are "
                "float32: numbers that would overflow float32 are rejected."
            ),
        },
        "paths": {
            "/v2": get("Server metadata", "ServerMetadata"),
            "/v2/health/live": get("Liveness", "Live"),
            "/v2/health/ready": {
                "get": {
                    "summary": "Readiness (smoke vectors reproduce)",
                    "responses": ready_responses,
                }
            },
            model: get("Model metadata", "ModelMetadata"),
            f"{model}/ready": {"get": {"summary": "Model readiness", "responses": ready_responses}},
            versioned: get("Model version metadata", "ModelMetadata", 404, params=True),
            f"{versioned}/ready": {
                "get": {
                    "summary": "Model version readiness",
                    "parameters": [version_param],
                    "responses": {**ready_responses, **_errors(404)},
                }
            },
            f"{model}/infer": infer(params=False),
            f"{versioned}/infer": infer(params=True),
            "/predict": {
                "post": {
                    "summary": "Predict failure labels for feature records",
                    "requestBody": predict_body,
                    "responses": {
                        "200": _json(_ref("PredictResponse"), "One prediction per record"),
                        **_errors(*guarded(400, 408, 413, 415, 503)),
                    },
                    **security,
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {
                        "200": {
                            "description": "Prometheus text exposition format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {
                        "200": _json({"type": "object"}, "OpenAPI 3.0.3 document"),
                    },
                }
            },
        },
        "components": {
            "schemas": _schemas(feature_names, max_rows),
            "securitySchemes": {
                _SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": (
                        "The token in the file named by LINKEDGE_API_TOKEN_FILE; required by "
                        "/predict and V2 infer when that is set. Health, metadata and "
                        "/metrics never require it."
                    ),
                }
            },
        },
    }
