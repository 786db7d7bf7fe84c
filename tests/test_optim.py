"""Optimizers, schedulers and gradient clipping.

Each optimizer's 20-step trajectory on a fixed problem is checked against a small
independent numpy implementation of the textbook rule written out below (always), and
against PyTorch's optimizer (when torch is importable). Schedulers and clipping likewise.
"""
import json
import math

import numpy as np
import pytest

import rnncore
from rnncore import optim
from rnncore.nn import Parameter

STEPS = 20
SHAPES = [(7, 5), (3,), (2, 3, 4)]


def close(actual, expected, rtol=1e-10, atol=1e-12):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    bad = np.abs(actual - expected) > atol + rtol * np.abs(expected)
    assert not bad.any(), f"max abs diff {np.max(np.abs(actual - expected))} (rtol={rtol}, atol={atol})"


# -- the fixed problem: a quadratic bowl plus a step-dependent wobble -----------------------------

def initial_params(dtype=np.float64):
    rng = np.random.default_rng(1234)
    return [rng.standard_normal(s).astype(dtype) for s in SHAPES]


def gradient(k, p, step):
    """dL/dp for parameter k at `step` (1-based): curvature * (p - target) + wobble."""
    idx = np.arange(p.size, dtype=np.float64).reshape(p.shape)
    curvature = 0.5 + (idx % 4) * 0.25
    target = np.cos(idx * 0.7 + k)
    return (curvature * (p - target) + 0.3 * np.sin(idx * 0.37 * step + k)).astype(p.dtype)


# -- textbook rules, written out independently (numpy, one parameter at a time) -------------------

def reference_step(name, o, p, g, st, t):
    """Update p (returns the new p) for step t >= 1; `st` is this parameter's state dict."""
    lr = o.get("lr")
    if o.get("maximize"):
        g = -g
    if name == "SGD":
        mu, damp, wd = o.get("momentum", 0.0), o.get("dampening", 0.0), o.get("weight_decay", 0.0)
        d = g + wd * p
        if mu:
            st["b"] = d.copy() if t == 1 else mu * st["b"] + (1 - damp) * d
            d = d + mu * st["b"] if o.get("nesterov") else st["b"]
        return p - lr * d
    if name in ("Adam", "AdamW"):
        b1, b2 = o.get("betas", (0.9, 0.999))
        eps = o.get("eps", 1e-8)
        wd = o.get("weight_decay", 1e-2 if name == "AdamW" else 0.0)
        if name == "AdamW":
            p = p * (1 - lr * wd)
        else:
            g = g + wd * p
        st.setdefault("m", np.zeros_like(p))
        st.setdefault("v", np.zeros_like(p))
        st["m"] = b1 * st["m"] + (1 - b1) * g
        st["v"] = b2 * st["v"] + (1 - b2) * g * g
        v = st["v"]
        if o.get("amsgrad"):
            st["vmax"] = np.maximum(st.get("vmax", np.zeros_like(p)), v)
            v = st["vmax"]
        m_hat = st["m"] / (1 - b1 ** t)
        v_hat = v / (1 - b2 ** t)
        return p - lr * m_hat / (np.sqrt(v_hat) + eps)
    if name == "RMSprop":
        alpha, eps, mu = o.get("alpha", 0.99), o.get("eps", 1e-8), o.get("momentum", 0.0)
        g = g + o.get("weight_decay", 0.0) * p
        st["sq"] = alpha * st.get("sq", np.zeros_like(p)) + (1 - alpha) * g * g
        if o.get("centered"):
            st["ga"] = alpha * st.get("ga", np.zeros_like(p)) + (1 - alpha) * g
            denom = np.sqrt(st["sq"] - st["ga"] ** 2) + eps
        else:
            denom = np.sqrt(st["sq"]) + eps
        if mu > 0:
            st["b"] = mu * st.get("b", np.zeros_like(p)) + g / denom
            return p - lr * st["b"]
        return p - lr * g / denom
    if name == "Adagrad":
        g = g + o.get("weight_decay", 0.0) * p
        st.setdefault("sum", np.full_like(p, o.get("initial_accumulator_value", 0.0)))
        st["sum"] = st["sum"] + g * g
        clr = lr / (1 + (t - 1) * o.get("lr_decay", 0.0))
        return p - clr * g / (np.sqrt(st["sum"]) + o.get("eps", 1e-10))
    raise AssertionError(name)


def reference_trajectory(name, options, steps=STEPS, dtype=np.float64):
    params = initial_params(dtype)
    states = [{} for _ in params]
    history = []
    for t in range(1, steps + 1):
        grads = [gradient(k, p, t) for k, p in enumerate(params)]
        params = [reference_step(name, options, p, g, st, t) for p, g, st in zip(params, grads, states)]
        history.append([p.copy() for p in params])
    return history


def rnncore_trajectory(name, options, steps=STEPS, dtype=np.float64, threads=None):
    params = [Parameter(p) for p in initial_params(dtype)]
    opt = getattr(optim, name)(params, threads=threads, **options)
    history = []
    for t in range(1, steps + 1):
        for k, p in enumerate(params):
            p.grad[...] = gradient(k, p.data, t)
        opt.step()
        history.append([p.data.copy() for p in params])
    return history, opt, params


def torch_trajectory(torch, name, options, steps=STEPS):
    params = [torch.tensor(p, requires_grad=True) for p in initial_params()]
    opt = getattr(torch.optim, name)(params, **options)
    history = []
    for t in range(1, steps + 1):
        for k, p in enumerate(params):
            p.grad = torch.from_numpy(gradient(k, p.detach().numpy(), t))
        opt.step()
        history.append([p.detach().numpy().copy() for p in params])
    return history


CASES = [
    ("SGD", dict(lr=0.05)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.3)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("SGD", dict(lr=0.05, momentum=0.5, weight_decay=0.1, maximize=True)),
    ("Adam", dict(lr=0.05)),
    ("Adam", dict(lr=0.05, amsgrad=True)),
    ("Adam", dict(lr=0.05, weight_decay=0.1)),
    ("Adam", dict(lr=0.02, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.05, amsgrad=True, maximize=True)),
    ("AdamW", dict(lr=0.05)),
    ("AdamW", dict(lr=0.05, weight_decay=0.2, amsgrad=True)),
    ("RMSprop", dict(lr=0.01)),
    ("RMSprop", dict(lr=0.01, centered=True)),
    ("RMSprop", dict(lr=0.01, momentum=0.9)),
    ("RMSprop", dict(lr=0.01, alpha=0.9, centered=True, momentum=0.5, weight_decay=0.1)),
    ("RMSprop", dict(lr=0.01, eps=1e-4, maximize=True)),
    ("Adagrad", dict(lr=0.1)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.05)),
    ("Adagrad", dict(lr=0.1, initial_accumulator_value=0.5, weight_decay=0.1, eps=1e-6)),
    ("Adagrad", dict(lr=0.1, maximize=True)),
]
IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in o.items())}" for n, o in CASES]


@pytest.mark.parametrize("name,options", CASES, ids=IDS)
def test_matches_textbook_reference(name, options):
    ours, _, _ = rnncore_trajectory(name, options)
    ref = reference_trajectory(name, options)
    for step, (a, b) in enumerate(zip(ours, ref)):
        for k in range(len(SHAPES)):
            close(a[k], b[k], rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("name,options", CASES, ids=IDS)
def test_matches_pytorch(name, options):
    torch = pytest.importorskip("torch")
    ours, _, _ = rnncore_trajectory(name, options)
    theirs = torch_trajectory(torch, name, options)
    for a, b in zip(ours, theirs):
        for k in range(len(SHAPES)):
            close(a[k], b[k], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name,options", [CASES[3], CASES[8], CASES[10], CASES[14], CASES[18]],
                         ids=[IDS[3], IDS[8], IDS[10], IDS[14], IDS[18]])
def test_float32_follows_float64(name, options):
    ours, _, params = rnncore_trajectory(name, options, steps=10, dtype=np.float32)
    assert all(p.data.dtype == np.float32 for p in params)
    ref = reference_trajectory(name, options, steps=10)
    for k in range(len(SHAPES)):
        close(ours[-1][k], ref[-1][k], rtol=1e-4, atol=1e-5)


def test_defaults_are_pytorchs():
    p = [Parameter(np.zeros(3))]
    assert optim.SGD(p).defaults == dict(lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False,
                                         maximize=False)
    adam = optim.Adam(p).defaults
    assert (adam["lr"], adam["betas"], adam["eps"], adam["weight_decay"], adam["amsgrad"]) == \
        (1e-3, (0.9, 0.999), 1e-8, 0, False)
    assert optim.AdamW(p).defaults["weight_decay"] == 1e-2
    rms = optim.RMSprop(p).defaults
    assert (rms["lr"], rms["alpha"], rms["eps"], rms["momentum"], rms["centered"]) == (1e-2, 0.99, 1e-8, 0, False)
    ada = optim.Adagrad(p).defaults
    assert (ada["lr"], ada["lr_decay"], ada["initial_accumulator_value"], ada["eps"]) == (1e-2, 0, 0, 1e-10)


@pytest.mark.parametrize("name,options", [("SGD", dict(lr=0.1, momentum=0.9)), ("Adam", dict(amsgrad=True)),
                                          ("RMSprop", dict(centered=True, momentum=0.3)), ("Adagrad", {})])
def test_threads_do_not_change_results(name, options):
    rng = np.random.default_rng(0)
    data = rng.standard_normal(200_003)
    results = []
    for threads in (1, 2):
        p = Parameter(data.copy())
        opt = getattr(optim, name)([p], threads=threads, **options)
        for t in range(3):
            p.grad[...] = np.sin(p.data * (t + 1))
            opt.step()
        results.append(p.data.copy())
    assert np.array_equal(results[0], results[1])


# -- Optimizer bookkeeping --------------------------------------------------------------------------

def test_param_groups_with_their_own_options():
    a, b = Parameter(np.ones(4)), Parameter(np.ones(4))
    opt = optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1)
    a.grad[...] = 1.0
    b.grad[...] = 1.0
    opt.step()
    close(a.data, np.full(4, 0.9))
    close(b.data, np.full(4, 0.5))
    assert opt.param_groups[1]["momentum"] == 0  # defaults filled in


def test_parameters_without_grad_are_skipped_and_zero_grad_zeroes():
    a, b = Parameter(np.ones(3)), Parameter(np.ones(3))
    b.grad = None
    opt = optim.Adam([a, b], lr=0.1)
    a.grad[...] = 2.0
    opt.step()
    assert not np.array_equal(a.data, np.ones(3)) and np.array_equal(b.data, np.ones(3))
    assert b not in opt.state
    opt.zero_grad()
    assert np.array_equal(a.grad, np.zeros(3)) and b.grad is None


def test_model_parameters_and_named_parameters():
    lstm = rnncore.nn.LSTM(3, 4, dtype=np.float64)
    opt = optim.SGD(lstm.named_parameters(), lr=0.1)
    assert opt.param_groups[0]["param_names"][0] == "weight_ih_l0"
    opt = optim.SGD(lstm.parameters(), lr=0.1)
    assert len(opt.param_groups[0]["params"]) == 4


@pytest.mark.parametrize("make,error,match", [
    (lambda p: optim.SGD(p, lr=-1), ValueError, "learning rate"),
    (lambda p: optim.SGD(p, nesterov=True), ValueError, "Nesterov"),
    (lambda p: optim.SGD(p, momentum=-0.1), ValueError, "momentum"),
    (lambda p: optim.Adam(p, betas=(1.0, 0.9)), ValueError, "beta parameter at index 0"),
    (lambda p: optim.Adam(p, eps=-1), ValueError, "epsilon"),
    (lambda p: optim.RMSprop(p, alpha=-1), ValueError, "alpha"),
    (lambda p: optim.Adagrad(p, lr_decay=-1), ValueError, "lr_decay"),
    (lambda p: optim.SGD(p, lr="fast"), TypeError, "lr must be a real number"),
    (lambda p: optim.SGD([], lr=0.1), ValueError, "empty parameter list"),
    (lambda p: optim.SGD([np.zeros(3)], lr=0.1), TypeError, "rnncore Parameters"),
    (lambda p: optim.SGD(p + p, lr=0.1), ValueError, "same parameter twice"),
    (lambda p: optim.SGD([{"params": p}, {"params": p}], lr=0.1), ValueError, "more than one"),
    (lambda p: optim.SGD(set(p), lr=0.1), TypeError, "not a set"),
    (lambda p: optim.SGD(p, lr=0.1, threads=0), ValueError, "threads"),
])
def test_bad_options(make, error, match):
    with pytest.raises(error, match=match):
        make([Parameter(np.zeros(3))])


def test_bad_gradients():
    p = Parameter(np.zeros(3))
    opt = optim.Adam([p])
    p.grad = np.zeros(4)
    with pytest.raises(ValueError, match="grad must have its shape"):
        opt.step()
    p.grad = np.zeros(3, dtype=np.float32)  # converted once to the parameter's dtype
    opt.step()
    p.data = np.zeros(3, dtype=np.int64)
    p.grad = np.zeros(3, dtype=np.int64)
    with pytest.raises(TypeError, match="float32 or float64"):
        opt.step()


def test_kernel_bindings_refuse_bad_arrays():
    from rnncore import _core

    p, g, b = np.ones(4), np.ones(4), np.zeros(4)
    with pytest.raises(ValueError, match="share memory"):
        _core.sgd_step(p, p, b, lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="momentum_buffer is required"):
        _core.sgd_step(p, g, None, lr=0.1, momentum=0.9)
    with pytest.raises(TypeError, match="dtype float64"):
        _core.adam_step(p, g.astype(np.float32), b, b.copy(), step=1, lr=0.1, beta1=0.9, beta2=0.99, eps=1e-8)
    with pytest.raises(ValueError, match="shape"):
        _core.adagrad_step(p, g, np.zeros(5), step=1, lr=0.1)
    with pytest.raises(ValueError, match="step must be >= 1"):
        _core.adagrad_step(p, g, b, step=0, lr=0.1)
    with pytest.raises(ValueError, match="writeable"):
        ro = np.ones(4)
        ro.flags.writeable = False
        _core.sgd_step(ro, g, lr=0.1)
    with pytest.raises(ValueError, match="C-contiguous"):
        _core.sgd_step(np.ones((4, 4))[:, ::2], np.ones((4, 2)), lr=0.1)
    with pytest.raises(ValueError, match="threads"):
        _core.sgd_step(p, g, lr=0.1, threads=0)


@pytest.mark.parametrize("name,options", [CASES[3], CASES[8], CASES[14], CASES[18]],
                         ids=[IDS[3], IDS[8], IDS[14], IDS[18]])
def test_state_dict_round_trip_resumes_exactly(name, options):
    full, _, _ = rnncore_trajectory(name, options, steps=12)
    _, opt, params = rnncore_trajectory(name, options, steps=6)
    saved = opt.state_dict()
    # JSON-serialisable apart from its arrays
    json.dumps({"groups": saved["param_groups"],
                "state": {k: {n: v for n, v in s.items() if not isinstance(v, np.ndarray)}
                          for k, s in saved["state"].items()}})
    fresh = [Parameter(p.data.copy()) for p in params]
    opt2 = getattr(optim, name)(fresh, lr=123.0)  # options come back from the state
    opt2.load_state_dict(saved)
    assert opt2.param_groups[0]["lr"] == options.get("lr", opt.defaults["lr"])
    for t in range(7, 13):
        for k, p in enumerate(fresh):
            p.grad[...] = gradient(k, p.data, t)
        opt2.step()
    for k, p in enumerate(fresh):
        assert np.array_equal(p.data, full[-1][k])


def test_load_state_dict_checks_before_changing_anything():
    params = [Parameter(np.zeros(3)), Parameter(np.zeros(2))]
    opt = optim.Adam(params, lr=0.1)
    for p in params:
        p.grad[...] = 1.0
    opt.step()
    sd = opt.state_dict()
    other = optim.Adam([Parameter(np.zeros(3))], lr=0.2)
    with pytest.raises(ValueError, match="holds 2 parameters"):
        other.load_state_dict(sd)
    bad = opt.state_dict()
    bad["state"][1]["exp_avg"] = np.zeros(5)
    target = optim.Adam([Parameter(np.zeros(3)), Parameter(np.zeros(2))], lr=0.2)
    with pytest.raises(ValueError, match="exp_avg"):
        target.load_state_dict(bad)
    assert target.param_groups[0]["lr"] == 0.2 and not target.state


def test_state_follows_a_dtype_change():
    lstm = rnncore.nn.GRU(2, 3)
    opt = optim.Adam(lstm.parameters(), lr=0.01)
    for p in lstm.parameters():
        p.grad[...] = 0.5
    opt.step()
    lstm.double()
    for p in lstm.parameters():
        p.grad[...] = 0.5
    opt.step()
    assert all(s["exp_avg"].dtype == np.float64 for s in opt.state.values())


# -- schedulers -------------------------------------------------------------------------------------

SCHEDULERS = [
    ("StepLR", dict(step_size=3, gamma=0.5)),
    ("MultiStepLR", dict(milestones=[2, 5, 5, 11], gamma=0.3)),
    ("ExponentialLR", dict(gamma=0.9)),
    ("CosineAnnealingLR", dict(T_max=7, eta_min=0.01)),
    ("CosineAnnealingLR", dict(T_max=10)),
    ("LambdaLR", dict(lr_lambda=lambda e: 1.0 / (1 + e))),
    ("MultiplicativeLR", dict(lr_lambda=lambda e: 0.95)),
]


def _lr_sequence(module, opt_factory, name, kwargs, steps=30):
    opt = opt_factory()
    sched = getattr(module, name)(opt, **kwargs)
    seq = [sched.get_last_lr()]
    for _ in range(steps):
        opt.step()
        sched.step()
        seq.append(sched.get_last_lr())
    return np.array(seq)


def _two_groups_rnncore():
    return optim.SGD([{"params": [Parameter(np.zeros(2))]}, {"params": [Parameter(np.zeros(2))], "lr": 0.3}], lr=1.0)


@pytest.mark.parametrize("name,kwargs", SCHEDULERS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(SCHEDULERS)])
def test_scheduler_matches_pytorch(name, kwargs):
    torch = pytest.importorskip("torch")

    def torch_opt():
        return torch.optim.SGD([{"params": [torch.zeros(2, requires_grad=True)]},
                                {"params": [torch.zeros(2, requires_grad=True)], "lr": 0.3}], lr=1.0)

    ours = _lr_sequence(optim, _two_groups_rnncore, name, kwargs)
    theirs = _lr_sequence(torch.optim.lr_scheduler, torch_opt, name, kwargs)
    close(ours, theirs, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name,kwargs,formula", [
    ("StepLR", dict(step_size=3, gamma=0.5), lambda e, b: b * 0.5 ** (e // 3)),
    ("ExponentialLR", dict(gamma=0.9), lambda e, b: b * 0.9 ** e),
    ("CosineAnnealingLR", dict(T_max=7, eta_min=0.01),
     lambda e, b: 0.01 + (b - 0.01) * (1 + math.cos(math.pi * e / 7)) / 2 if (e // 7) % 2 == 0 or e % 7 == 0
     else None),
    ("ZarembaLR", dict(constant_epochs=4, factor=0.5), lambda e, b: b * 0.5 ** max(e + 1 - 4, 0)),
])
def test_scheduler_closed_forms(name, kwargs, formula):
    seq = _lr_sequence(optim, _two_groups_rnncore, name, kwargs, steps=14)
    for e, lrs in enumerate(seq):
        for b, lr in zip((1.0, 0.3), lrs):
            want = formula(e, b)
            if want is not None:
                assert abs(lr - want) <= 1e-12 * max(1.0, abs(want)), (e, lr, want)


def test_zaremba_equals_pytorch_lambda():
    torch = pytest.importorskip("torch")
    ours = _lr_sequence(optim, _two_groups_rnncore, "ZarembaLR", dict(constant_epochs=6, factor=1 / 1.2))

    def torch_opt():
        return torch.optim.SGD([{"params": [torch.zeros(2, requires_grad=True)]},
                                {"params": [torch.zeros(2, requires_grad=True)], "lr": 0.3}], lr=1.0)

    theirs = _lr_sequence(torch.optim.lr_scheduler, torch_opt, "LambdaLR",
                          dict(lr_lambda=lambda e: (1 / 1.2) ** max(e + 1 - 6, 0)))
    close(ours, theirs, rtol=1e-14)


PLATEAU = [dict(), dict(mode="max", patience=2), dict(patience=1, cooldown=2, factor=0.5),
           dict(patience=0, threshold=0.1, threshold_mode="abs", min_lr=[0.05, 0.2])]
METRICS = [1.0, 0.9, 0.95, 0.95, 0.96, 0.89, 0.9, 0.91, 0.92, 0.93, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0] * 2


@pytest.mark.parametrize("kwargs", PLATEAU)
def test_reduce_lr_on_plateau(kwargs):
    kwargs = dict(kwargs, **({} if "patience" in kwargs else {"patience": 2}))
    opt = _two_groups_rnncore()
    sched = optim.ReduceLROnPlateau(opt, **kwargs)
    ours = []
    for m in METRICS:
        sched.step(m)
        ours.append(sched.get_last_lr())
    assert ours[-1] != ours[0]  # it did reduce
    torch = pytest.importorskip("torch")
    topt = torch.optim.SGD([{"params": [torch.zeros(2, requires_grad=True)]},
                            {"params": [torch.zeros(2, requires_grad=True)], "lr": 0.3}], lr=1.0)
    tsched = torch.optim.lr_scheduler.ReduceLROnPlateau(topt, **kwargs)
    theirs = []
    for m in METRICS:
        tsched.step(m)
        theirs.append(tsched.get_last_lr())
    close(np.array(ours), np.array(theirs), rtol=1e-14)


def test_scheduler_state_dict_round_trip():
    opt = _two_groups_rnncore()
    sched = optim.CosineAnnealingLR(opt, T_max=9, eta_min=0.001)
    for _ in range(4):
        opt.step()
        sched.step()
    state = json.loads(json.dumps(sched.state_dict()))
    opt_state = opt.state_dict()
    expected = []
    for _ in range(5):
        opt.step()
        sched.step()
        expected.append(sched.get_last_lr())
    opt2 = _two_groups_rnncore()
    opt2.load_state_dict(opt_state)
    sched2 = optim.CosineAnnealingLR(opt2, T_max=9, eta_min=0.001, last_epoch=state["last_epoch"])
    sched2.load_state_dict(state)
    got = []
    for _ in range(5):
        opt2.step()
        sched2.step()
        got.append(sched2.get_last_lr())
    assert got == expected
    lam = optim.LambdaLR(opt, lambda e: 0.5)
    assert "lr_lambdas" not in lam.state_dict()
    plateau = optim.ReduceLROnPlateau(opt)
    json.dumps(plateau.state_dict(), allow_nan=True)


def test_scheduler_bad_arguments():
    opt = _two_groups_rnncore()
    with pytest.raises(TypeError, match="not an Optimizer"):
        optim.StepLR(object(), 3)
    with pytest.raises(ValueError, match="step_size"):
        optim.StepLR(opt, 0)
    with pytest.raises(ValueError, match="expected 2 lr_lambdas"):
        optim.LambdaLR(opt, [lambda e: 1.0])
    with pytest.raises(ValueError, match="factor"):
        optim.ReduceLROnPlateau(opt, factor=1.5)
    with pytest.raises(ValueError, match="mode"):
        optim.ReduceLROnPlateau(opt, mode="lowest")
    with pytest.raises(KeyError, match="initial_lr"):
        optim.StepLR(_two_groups_rnncore(), 3, last_epoch=5)


# -- gradient clipping ------------------------------------------------------------------------------

def _grads(dtype, scale):
    rng = np.random.default_rng(7)
    params = [Parameter(np.zeros(s, dtype=dtype)) for s in [(5, 4), (9,), (3, 3, 2), (40_000,)]]
    for p in params:
        p.grad[...] = rng.standard_normal(p.shape) * scale
    return params


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf, 3.5])
@pytest.mark.parametrize("max_norm", [0.5, 1e9])
def test_clip_grad_norm_against_numpy_and_torch(dtype, norm_type, max_norm):
    params = _grads(dtype, 0.1)
    before = [p.grad.astype(np.float64) for p in params]
    flat = np.concatenate([g.ravel() for g in before])
    want = np.max(np.abs(flat)) if math.isinf(norm_type) else np.sum(np.abs(flat) ** norm_type) ** (1 / norm_type)
    total = optim.clip_grad_norm_(params, max_norm, norm_type)
    assert isinstance(total, float)
    rtol = 1e-12 if dtype == np.float64 else 1e-6
    close(total, want, rtol=rtol)
    coef = min(max_norm / (want + 1e-6), 1.0)
    for p, g in zip(params, before):
        close(p.grad, g * coef, rtol=rtol * 10, atol=0)
    torch = pytest.importorskip("torch")
    tparams = []
    for g in before:
        t = torch.zeros(g.shape, dtype=torch.float64 if dtype == np.float64 else torch.float32, requires_grad=True)
        t.grad = torch.from_numpy(g.astype(dtype))
        tparams.append(t)
    ttotal = torch.nn.utils.clip_grad_norm_(tparams, max_norm, norm_type)
    # torch accumulates a float32 norm in float32 (ours in double): compare at float32's accuracy
    trtol = rtol if dtype == np.float64 else 3e-5
    close(total, float(ttotal), rtol=trtol)
    for p, t in zip(params, tparams):
        close(p.grad, t.grad.numpy(), rtol=trtol, atol=1e-12)


def test_clip_grad_norm_edge_cases():
    assert optim.clip_grad_norm_([], 1.0) == 0.0
    params = _grads(np.float64, 1.0)
    params[1].grad[3] = np.nan
    with pytest.raises(RuntimeError, match="non-finite"):
        optim.clip_grad_norm_(params, 1.0, error_if_nonfinite=True)
    assert not np.isnan(params[0].grad).any()  # unchanged when it refuses
    assert math.isnan(optim.clip_grad_norm_(params, 1.0))
    assert np.isnan(params[0].grad).all()  # PyTorch's behaviour: a NaN norm spreads
    with pytest.raises(ValueError, match="norm_type"):
        optim.clip_grad_norm_(_grads(np.float64, 1.0), 1.0, norm_type=0)
    lstm = rnncore.nn.LSTM(2, 3)
    for p in lstm.parameters():
        p.grad[...] = 1.0
    total = optim.clip_grad_norm_(lstm, 1.0)  # a Module is accepted too
    close(total, math.sqrt(sum(p.grad.size for p in lstm.parameters())), rtol=1e-12)


def test_clip_grad_norm_threads_agree():
    params = _grads(np.float32, 1.0)
    big = Parameter(np.zeros(300_001, dtype=np.float32))
    big.grad[...] = np.linspace(-1, 1, big.grad.size, dtype=np.float32)
    totals = [rnncore._core.norm_power_sum([p.grad for p in params + [big]], 2.0, t) for t in (1, 2)]
    assert totals[0] == totals[1]


def test_clip_grad_value():
    params = _grads(np.float32, 1.0)
    before = [p.grad.copy() for p in params]
    optim.clip_grad_value_(params, 0.25)
    for p, g in zip(params, before):
        assert np.array_equal(p.grad, np.clip(g, -0.25, 0.25))
    with pytest.raises(ValueError, match="clip_value"):
        optim.clip_grad_value_(params, -1)
