"""examples/output_recurrence.py --quick: the teacher-forced output-recurrent network's error
grows when it runs free on its own outputs (exposure bias), and the data generator's shapes."""
import importlib.util
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def load_example():
    path = os.path.join(HERE, "..", "examples", "output_recurrence.py")
    spec = importlib.util.spec_from_file_location("output_recurrence_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


example = load_example()


def test_data_is_a_partial_view_of_the_state():
    x, y, clean = example.van_der_pol(5, 7, np.random.default_rng(0), noise=0.0)
    assert x.shape == (7, 5, 3) and y.shape == clean.shape == (7, 5, 2)
    assert not x[1:, :, 1:].any()  # the state is shown at t = 0 only
    np.testing.assert_allclose(y, clean, atol=1e-6)
    # the first target is one step of the ODE away from the initial state shown at t = 0
    assert 0 < np.abs(clean[0] - x[0, :, 1:]).max() < 0.5


def test_quick_free_running_error_exceeds_teacher_forced():
    args = example.parse_args(["--quick"])
    assert args.seeds == 1 and args.figure == "" and args.steps <= 500
    lines = []
    results = example.run(args, log=lines.append)
    r = results["rmse"]
    assert r["free"]["test"] > 2 * r["tf"]["test"], lines
    assert r["free"]["train"] > 2 * r["tf"]["train"], lines
    assert r["tf"]["test"] < 0.15, lines  # the one-step problem is learnt
    assert results["gap"]["test"] > 0.05
    assert any("exposure bias" in line for line in lines)
