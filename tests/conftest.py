"""Test configuration: import rnncore from this checkout, never from another installed copy.

Putting the repository root first on sys.path makes ``import rnncore`` resolve to the
package next to this tests/ directory (built in place with ``setup.py build_ext --inplace``),
even when a different copy is pip-installed in editable mode. The ``rnncore_origin`` check
below fails loudly if that ever stops being true.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.dirname(os.path.abspath(__file__))
for path in (TESTS, ROOT):
    if path in sys.path:
        sys.path.remove(path)
    sys.path.insert(0, path)
# An already imported copy (e.g. via a .pth hook) would shadow ours: drop it.
for name in [m for m in sys.modules if m == "rnncore" or m.startswith("rnncore.")]:
    del sys.modules[name]

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import rnncore  # noqa: E402

if os.path.dirname(os.path.abspath(rnncore.__file__)) != os.path.join(ROOT, "rnncore"):
    raise RuntimeError(f"tests import rnncore from {rnncore.__file__}, not from {ROOT}")


@pytest.fixture(autouse=True)
def _restore_thread_default():
    """Every test starts and ends with the environment's default thread count."""
    rnncore.set_num_threads(None)
    yield
    rnncore.set_num_threads(None)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
