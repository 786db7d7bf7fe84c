"""Fuzz every rnncore._core function and class (see strategies.TARGETS, names core_*)."""
from rnncore import _core

from fuzz.strategies import TARGETS
from fuzz.testing import add_tests

CORE_TARGETS = sorted(n for n in TARGETS if n.startswith("core_"))
add_tests(globals(), CORE_TARGETS)


# _core names without a target of their own, and why (none today).
PENDING = {}


def test_every_core_name_is_fuzzed():
    public = {n for n in dir(_core) if not n.startswith("_")} - set(PENDING)
    covered = {c[len("_core."):] for n in CORE_TARGETS for c in TARGETS[n][1]}
    assert public - covered == set(), f"_core names without a fuzz target: {sorted(public - covered)}"
    assert covered - public == set(), f"fuzz targets name _core names that do not exist: {sorted(covered - public)}"
