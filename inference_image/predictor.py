"""Run an XGBoost model through libxgboost's C API.

The serving image needs only ``libxgboost.so`` and NumPy: the ``xgboost`` Python package
imports SciPy (150 MB) at import time and adds per-call overhead that dominates
single-record latency. This binding uses the same library, so predictions are identical.

A model trained on derived features (features.py) names its recipe in the attribute
``linkedge_derived_features``; the predictor then takes the 170 raw inputs as before and
appends the derived ones itself, exactly as training did.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import json
import os
import threading
from pathlib import Path

import numpy as np

from .features import MODEL_ATTRIBUTE, DerivedFeatures

_c_ulong_p = ctypes.POINTER(ctypes.c_uint64)
_c_float_p = ctypes.POINTER(ctypes.c_float)


class PredictorError(RuntimeError):
    """libxgboost could not be found or refused a call."""


def find_libxgboost() -> Path:
    """Locate libxgboost.so: ``LINKEDGE_LIBXGBOOST`` or the installed xgboost wheel."""
    explicit = os.environ.get("LINKEDGE_LIBXGBOOST")
    if explicit:
        return Path(explicit)
    spec = importlib.util.find_spec("xgboost")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise PredictorError(
            "libxgboost not found: install the xgboost-cpu wheel or set LINKEDGE_LIBXGBOOST"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "lib" / "libxgboost.so"
        if candidate.exists():
            return candidate
    raise PredictorError(f"xgboost is installed but has no lib/libxgboost.so under {location}")


def _load_library(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    lib.XGBGetLastError.restype = ctypes.c_char_p
    lib.XGBoosterCreate.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint64,
        ctypes.POINTER(ctypes.c_void_p),
    ]
    lib.XGBoosterLoadModel.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.XGBoosterSetParam.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
    lib.XGBoosterFree.argtypes = [ctypes.c_void_p]
    lib.XGProxyDMatrixCreate.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
    lib.XGDMatrixFree.argtypes = [ctypes.c_void_p]
    lib.XGBoosterGetNumFeature.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint64)]
    lib.XGBoosterGetAttr.argtypes = [
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.POINTER(ctypes.c_char_p),
        ctypes.POINTER(ctypes.c_int),
    ]
    lib.XGBoosterPredictFromDense.argtypes = [
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_void_p,
        ctypes.POINTER(_c_ulong_p),
        ctypes.POINTER(ctypes.c_uint64),
        ctypes.POINTER(_c_float_p),
    ]
    return lib


class NativePredictor:
    """Probability of the positive class for rows of float32 features (NaN = missing).

    One instance serves one process; calls are serialised by a lock because libxgboost
    returns predictions in a buffer owned by the booster, and reuses one proxy DMatrix.
    Without it libxgboost builds a proxy per call, and each new one reads the cgroup CPU
    quota from /sys (stat, open, read, regex): 99 µs per single-row call instead of 34 µs.
    """

    def __init__(self, model_path: Path, nthread: int = 1, library: Path | None = None) -> None:
        self._lib = _load_library(library or find_libxgboost())
        self._handle = ctypes.c_void_p()
        self._proxy = ctypes.c_void_p()
        self._lock = threading.Lock()
        self._call(self._lib.XGBoosterCreate(None, 0, ctypes.byref(self._handle)))
        self._call(self._lib.XGProxyDMatrixCreate(ctypes.byref(self._proxy)))
        self._call(self._lib.XGBoosterLoadModel(self._handle, str(model_path).encode()))
        self._call(self._lib.XGBoosterSetParam(self._handle, b"nthread", str(nthread).encode()))
        n_features = ctypes.c_uint64()
        self._call(self._lib.XGBoosterGetNumFeature(self._handle, ctypes.byref(n_features)))
        derived = self._derived_features(int(n_features.value))
        self.n_features = int(n_features.value) - len(derived.names())  # the raw inputs
        self._derive = derived.transform if derived.statistics else None
        self._config = json.dumps(
            {
                "type": 0,
                "training": False,
                "iteration_begin": 0,
                "iteration_end": 0,
                "strict_shape": False,
                "missing": float("nan"),
                "cache_id": 0,
            }
        ).encode()

    def _call(self, status: int) -> None:
        if status != 0:
            raise PredictorError(self._lib.XGBGetLastError().decode(errors="replace"))

    def _attribute(self, name: str) -> str | None:
        value = ctypes.c_char_p()
        found = ctypes.c_int()
        self._call(
            self._lib.XGBoosterGetAttr(
                self._handle, name.encode(), ctypes.byref(value), ctypes.byref(found)
            )
        )
        return value.value.decode() if found.value and value.value is not None else None

    def _derived_features(self, model_features: int) -> DerivedFeatures:
        recipe = self._attribute(MODEL_ATTRIBUTE) or ""
        try:
            derived = DerivedFeatures.from_recipe(recipe)
        except ValueError as exc:
            raise PredictorError(f"the model's derived features: {exc}") from None
        if derived.statistics and derived.width != model_features:
            raise PredictorError(
                f"the model takes {model_features} features, its derived-feature recipe "
                f"{recipe!r} makes {derived.width}"
            )
        return derived

    def predict_proba(self, rows: np.ndarray) -> np.ndarray:
        """Return one float32 probability per row of a (n, n_features) array."""
        flags = rows.flags
        if rows.dtype == np.float32 and flags.c_contiguous and flags.aligned:
            data = rows  # the serving path: no conversion, no copy
        else:  # libxgboost refuses misaligned data (e.g. floats after a binary request's JSON)
            with np.errstate(over="raise", invalid="ignore"):
                try:
                    data = np.require(rows, np.float32, ["C_CONTIGUOUS", "ALIGNED"])
                except FloatingPointError:
                    raise ValueError("a value is beyond the 32-bit float range") from None
        if data.ndim != 2 or data.shape[1] != self.n_features:
            raise ValueError(f"expected shape (n, {self.n_features}), got {data.shape}")
        n_rows = data.shape[0]
        if n_rows == 0:
            return np.empty(0, dtype=np.float32)
        if self._derive is not None:
            data = self._derive(data)
        interface = (
            f'{{"data":[{data.ctypes.data},true],"shape":[{n_rows},{data.shape[1]}],'
            f'"typestr":"<f4","version":3}}'
        ).encode()
        shape = _c_ulong_p()
        dims = ctypes.c_uint64()
        out = _c_float_p()
        with self._lock:
            self._call(
                self._lib.XGBoosterPredictFromDense(
                    self._handle,
                    interface,
                    self._config,
                    self._proxy,
                    ctypes.byref(shape),
                    ctypes.byref(dims),
                    ctypes.byref(out),
                )
            )
            values = 1
            for index in range(dims.value):
                values *= shape[index]
            if values != n_rows:
                raise PredictorError(
                    f"model returned {values} values for {n_rows} rows: "
                    "only binary:logistic models with one output are supported"
                )
            return np.ctypeslib.as_array(out, shape=(n_rows,)).copy()

    def close(self) -> None:
        if self._proxy:
            self._lib.XGDMatrixFree(self._proxy)
            self._proxy = ctypes.c_void_p()
        if self._handle:
            self._lib.XGBoosterFree(self._handle)
            self._handle = ctypes.c_void_p()

    def __del__(self) -> None:  # pragma: no cover - interpreter shutdown order varies
        with contextlib.suppress(Exception):
            self.close()
