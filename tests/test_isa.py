"""The one instruction-set switch (csrc/common/cpu.h): RNNCORE_ISA forces every kernel family
(GEMM, activations, fused cells) onto one path, clamped to what the CPU supports.

Each forced path runs the kernel tests in full through `.ci/run` (RNNCORE_ISA=<isa> pytest on
the kernel test files, for every ISA in `_core.supported_isas()`); here each path is checked
to take effect and to give the same layer results as the reference, in a child process (the
choice is made once per process).
"""
import os
import subprocess
import sys

import pytest

from rnncore import _core

ALL = ["generic", "avx2", "avx512"]

_CHILD = r"""
import numpy as np
from rnncore import _core
from rnncore.nn import LSTM, GRU
import reference
rng = np.random.default_rng(3)
T, B, I, H = 6, 3, 5, 19
x = rng.standard_normal((T, B, I))
from rnncore.nn import RNN
for cls, cell, kw in ((LSTM, "lstm", {}), (GRU, "gru", {}), (RNN, "rnn_tanh", {}),
                      (RNN, "rnn_relu", {"nonlinearity": "relu"})):
    layer = cls(I, H, dtype=np.float32, seed=1, **kw)
    y, _ = layer.forward(x.astype(np.float32))
    params = {k: v.astype(np.float64) for k, v in layer.state_dict().items()}
    ref = reference.rnn_forward(cell, x, params, num_layers=1)[0]
    assert np.abs(y - ref).max() < 1e-5, (cell, np.abs(y - ref).max())
print(_core.isa(), _core.gemm_kernel(), _core.vmath_kernel(), _core.cells_kernel())
"""


def _run(isa):
    env = dict(os.environ)
    env.pop("RNNCORE_ISA", None)
    if isa is not None:
        env["RNNCORE_ISA"] = isa
    tests = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(tests)
    env["PYTHONPATH"] = os.pathsep.join([root, tests] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    r = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_supported_isas_are_a_prefix_of_the_ladder():
    supported = _core.supported_isas()
    assert supported == ALL[: len(supported)]
    assert _core.isa() in supported


def test_the_active_isa_is_the_forced_one():
    forced = os.environ.get("RNNCORE_ISA")
    if forced in ALL:
        supported = _core.supported_isas()
        expect = forced if forced in supported else supported[-1]
        assert _core.isa() == expect
    else:
        assert _core.isa() == _core.supported_isas()[-1]


@pytest.mark.parametrize("isa", ALL)
def test_forcing_an_isa_switches_every_kernel_family(isa):
    supported = _core.supported_isas()
    got_isa, gemm, vmath, cells = _run(isa)
    expect = isa if isa in supported else supported[-1]  # a request above the CPU is clamped
    assert got_isa == expect
    assert gemm == expect
    assert vmath == expect  # the activations
    assert cells == expect  # the fused cells ('generic': the cells' portable loops)
