import numpy as np
import pytest
import xgboost as xgb

from inference_image.predictor import NativePredictor, PredictorError


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    rng = np.random.default_rng(5)
    features = rng.normal(size=(400, 170)).astype(np.float32)
    labels = (features[:, 0] + features[:, 1] > 0).astype(np.float32)
    features[rng.random(features.shape) < 0.1] = np.nan
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 4, "nthread": 1, "seed": 0},
        xgb.DMatrix(features, label=labels),
        40,
    )
    path = tmp_path_factory.mktemp("model") / "model.json"
    booster.save_model(path)
    return booster, path, features


def test_matches_xgboost_exactly_including_missing(model):
    booster, path, features = model
    predictor = NativePredictor(path)
    np.testing.assert_array_equal(
        predictor.predict_proba(features), booster.inplace_predict(features)
    )
    assert predictor.n_features == 170


def test_single_row_and_empty_batch(model):
    booster, path, features = model
    predictor = NativePredictor(path)
    assert predictor.predict_proba(features[:1])[0] == booster.inplace_predict(features[:1])[0]
    assert predictor.predict_proba(np.empty((0, 170), np.float32)).shape == (0,)


def test_wrong_width_is_refused(model):
    _, path, _ = model
    with pytest.raises(ValueError, match=r"expected shape \(n, 170\)"):
        NativePredictor(path).predict_proba(np.zeros((2, 169), np.float32))


def test_unreadable_model_is_a_predictor_error(tmp_path):
    bad = tmp_path / "model.json"
    bad.write_text("{not json")
    with pytest.raises(PredictorError):
        NativePredictor(bad)


def test_values_beyond_float32_are_refused(model):
    _, path, _ = model
    rows = np.zeros((1, 170), dtype=np.float64)
    rows[0, 3] = 1e300
    with pytest.raises(ValueError, match="32-bit float range"):
        NativePredictor(path).predict_proba(rows)


def test_multi_output_models_are_refused(tmp_path):
    rng = np.random.default_rng(1)
    features = rng.normal(size=(90, 170)).astype(np.float32)
    booster = xgb.train(
        {"objective": "multi:softprob", "num_class": 3, "nthread": 1},
        xgb.DMatrix(features, label=rng.integers(0, 3, 90)),
        3,
    )
    booster.save_model(tmp_path / "multi.json")
    with pytest.raises(PredictorError, match="one output"):
        NativePredictor(tmp_path / "multi.json").predict_proba(features[:4])
