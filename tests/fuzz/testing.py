"""Turning TARGETS into pytest tests: one hypothesis test per target, its example budget the
profile's max_examples times the target's weight."""
from hypothesis import given, settings

from fuzz.strategies import TARGETS


def make_test(name):
    strategy, _, weight = TARGETS[name]
    budget = max(3, round(settings().max_examples * weight))

    @settings(max_examples=budget)
    @given(call=strategy)
    def test(pool, call):
        pool.check(call)

    test.__name__ = test.__qualname__ = f"test_{name}"
    test.__doc__ = f"Fuzz {name}: every call returns or raises an allowed exception; none crashes or hangs."
    return test


def add_tests(namespace, names):
    for name in names:
        namespace[f"test_{name}"] = make_test(name)
