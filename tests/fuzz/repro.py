"""Names a printed reproducer uses: ``from fuzz.repro import *`` (with tests/ on the path), then
the line the harness printed, e.g.

    PYTHONPATH=tests python3 -c "from fuzz.repro import *; _core.embedding_forward(A('float32', (3, 4)), ...)"

Here A(...) and Junk(...) build their array or object at once; the scenarios of
fuzz.scenarios are importable by their bare names.
"""
from math import inf, nan  # noqa: F401  (a reproducer may print them)

import numpy as np  # noqa: F401

import rnncore  # noqa: F401
from rnncore import _core  # noqa: F401

from fuzz import scenarios, specs
from fuzz.scenarios import *  # noqa: F401,F403

__all__ = ["A", "Junk", "np", "rnncore", "_core", "nan", "inf"] + list(scenarios.__all__)


def A(*args, **kwargs):  # noqa: N802 - the recipe's name, so printed calls run as they are
    return specs.A(*args, **kwargs).build()


def Junk(kind):  # noqa: N802
    return specs.Junk(kind).build()
