"""Hypothesis profiles and the worker pool for the fuzz tests.

RNNCORE_FUZZ_PROFILE selects the budget: "ci" (the default: small, derandomized, so a run is
reproducible and takes well under a minute), "dev" (more examples, random, with the example
database, for local runs) or "long" (large). RNNCORE_FUZZ_TIMEOUT overrides the per-call timeout
(seconds) after which a call counts as a hang.
"""
import os

import pytest
from hypothesis import HealthCheck, Phase, settings

from fuzz.pool import Pool

_QUIET = [HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large,
          HealthCheck.function_scoped_fixture, HealthCheck.large_base_example]

# ci: no shrinking (a hang costs a whole timeout per shrink step); the first failing call is reported.
settings.register_profile("ci", max_examples=20, derandomize=True, database=None, deadline=None,
                          suppress_health_check=_QUIET, print_blob=False, phases=[Phase.explicit, Phase.generate])
settings.register_profile("dev", max_examples=200, deadline=None, suppress_health_check=_QUIET, print_blob=True)
settings.register_profile("long", max_examples=2000, deadline=None, suppress_health_check=_QUIET, print_blob=True)
PROFILE = os.environ.get("RNNCORE_FUZZ_PROFILE", "ci")
settings.load_profile(PROFILE)

TIMEOUT = float(os.environ.get("RNNCORE_FUZZ_TIMEOUT", "10" if PROFILE == "ci" else "30"))


@pytest.fixture(scope="session")
def pool():
    with Pool(timeout=TIMEOUT) as p:
        yield p
