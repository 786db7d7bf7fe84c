"""rnncore: fast recurrent neural networks (RNN, LSTM, GRU) on the CPU.

The hot path is C++ (rnncore._core): fused cell kernels, backpropagation through time,
OpenMP threads. This package is the thin Python layer over it.
"""
import importlib.machinery as _machinery
import importlib.util as _util
import os as _os
import sys as _sys

__version__ = "0.1.0"

__all__ = [
    "nn", "optim", "data", "sampling", "ngram", "diagnostics", "tasks", "Trainer", "evaluate", "set_num_threads", "get_num_threads",
    "NoForwardError", "save", "load", "CheckpointError", "from_torch", "to_torch", "quantize", "__version__",
]

# -- an unbuilt source checkout imports the installed build -----------------------------------
#
# `pip install .` builds the extensions into site-packages and leaves the checkout's rnncore/
# unbuilt. Python puts the current directory first on sys.path for `python -c`, `python -m`
# and the REPL, so from the repository root `import rnncore` finds this unbuilt tree first.
# Then, instead of failing on the missing `_core`, this package loads the installed, built
# rnncore found further along the import path and steps aside for it: sys.modules["rnncore"]
# becomes that package, which the import statement then returns. A checkout built in place
# (`python setup.py build_ext --inplace`, `pip install -e .`) imports itself as usual.

_HERE = _os.path.dirname(_os.path.abspath(__file__))


def _is_built(package_dir):
    """Whether every extension module is built in `package_dir` for this interpreter."""
    for name, folder in (("rnncore._core", package_dir), ("rnncore.data._fast", _os.path.join(package_dir, "data")),
                         ("rnncore.ngram._kn", _os.path.join(package_dir, "ngram"))):
        spec = _machinery.PathFinder.find_spec(name, [folder])
        if spec is None or not isinstance(spec.loader, _machinery.ExtensionFileLoader):
            return False
    return True


def _installed_build_spec():
    """The import spec of a built rnncore other than this source tree, or None."""
    here = _os.path.realpath(_HERE)
    candidates = []
    for entry in _sys.path:  # each entry alone, so an unbuilt copy earlier on the path is passed over
        if isinstance(entry, str):
            candidates.append(_machinery.PathFinder.find_spec(__name__, [entry or _os.getcwd()]))
    for finder in _sys.meta_path:  # e.g. the finder of an editable install of another checkout
        if finder is not _machinery.PathFinder and hasattr(finder, "find_spec"):
            try:
                candidates.append(finder.find_spec(__name__, None))
            except Exception:  # a third-party finder that cannot answer: not ours to debug here
                continue
    for spec in candidates:
        locations = list(getattr(spec, "submodule_search_locations", None) or [])
        if spec is None or spec.loader is None or len(locations) != 1:
            continue
        if _os.path.realpath(locations[0]) != here and _is_built(locations[0]):
            return spec
    return None


def _load_installed_build():
    spec = _installed_build_spec()
    if spec is None:
        raise ImportError(
            f"rnncore: the extension modules rnncore._core and rnncore.data._fast are not built in this source "
            f"tree ({_HERE}), and no installed, built rnncore was found elsewhere on sys.path.\n"
            "  Install it:       pip install .    (then `import rnncore` works from here too)\n"
            "  or build in place: python setup.py build_ext --inplace   (or: pip install -e .)",
            name=__name__)
    module = _util.module_from_spec(spec)
    _sys.modules[__name__] = module  # what `import rnncore` returns once this file has run
    spec.loader.exec_module(module)


if _is_built(_HERE):
    from . import data, diagnostics, ngram, nn, optim, sampling, tasks
    from ._checks import NoForwardError
    from ._threads import get_num_threads, set_num_threads
    from .io import CheckpointError, from_torch, load, save, to_torch
    from .nn.quantized import quantize
    from .trainer import Trainer, evaluate
else:
    _load_installed_build()
