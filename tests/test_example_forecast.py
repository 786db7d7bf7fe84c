"""examples/forecast_sunspots.py --quick: the RNNs and the AR model beat the naive forecast; the
baselines on their own (least squares against numpy's polyfit-free reference)."""
import importlib.util
import os

import numpy as np
import pytest

from rnncore import datasets

HERE = os.path.dirname(os.path.abspath(__file__))


def load_example():
    path = os.path.join(HERE, "..", "examples", "forecast_sunspots.py")
    spec = importlib.util.spec_from_file_location("forecast_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


forecast = load_example()


def _have_sunspots():
    try:
        datasets.sunspots()
        return True
    except datasets.MissingCorpusError:
        return False


def test_baselines_on_a_known_series():
    # an exact AR(2) recursion: the least-squares fit recovers it, the naive forecast does not
    y = np.zeros(60)
    y[:2] = [1.0, 0.5]
    for t in range(2, 60):
        y[t] = 0.3 + 1.2 * y[t - 1] - 0.5 * y[t - 2]
    train = np.arange(60) < 40
    pred, coef = forecast.ar_forecast(y, 2, train)
    np.testing.assert_allclose(coef, [0.3, 1.2, -0.5], atol=1e-9)
    np.testing.assert_allclose(pred[2:], y[2:], atol=1e-9)
    assert np.isnan(pred[:2]).all()
    naive = forecast.naive_forecast(y)
    assert np.isnan(naive[0]) and np.array_equal(naive[1:], y[:-1])
    X = forecast.ar_design(y, 3)
    assert X.shape == (57, 4) and np.array_equal(X[0], [1.0, y[2], y[1], y[0]])


def test_split_is_chronological():
    years = np.arange(1700, 2009)
    masks = forecast.split_index(years)
    assert sum(m.sum() for m in masks.values()) == len(years)
    assert years[masks["train"]].max() < years[masks["valid"]].min() <= years[masks["valid"]].max() \
        < years[masks["test"]].min()


@pytest.mark.skipif(not _have_sunspots(), reason="corpus: " + datasets.INSTALL_COMMAND)
def test_quick_rnns_beat_the_naive_forecast():
    args = forecast.parse_args(["--quick"])
    assert args.steps <= 300 and args.figure == "" and args.seeds == 2
    lines = []
    results = forecast.run(args, log=lines.append)
    r = results["rmse"]
    ar = r[f"AR({results['ar_order']})"]
    assert 1 < results["ar_order"] <= 20
    assert ar < 0.75 * r["naive"], lines
    assert r["LSTM"] < 0.75 * r["naive"] and r["GRU"] < 0.75 * r["naive"], lines
    assert any("test RMSE" in line for line in lines)
