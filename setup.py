"""Build for rnncore: the pybind11 extension ``rnncore._core`` from everything in csrc/, and
the Cython extensions ``rnncore.data._fast`` (text <-> ids loops) and ``rnncore.ngram._kn``
(n-gram counting, querying, ARPA text), cythonized at build time.

Build flags are probed, not assumed:
  * C++17 and -O3 always; no -ffast-math (it breaks tanh/exp edge cases).
  * OpenMP if the compiler accepts it (-fopenmp); otherwise the kernels run on one thread.
  * -march=native only when RNNCORE_NATIVE=1 (local builds); the released build runs on any
    x86-64 and picks instruction-set specific kernels at run time.
  * RNNCORE_SANITIZE=address,undefined (any list that -fsanitize= accepts) builds both extensions
    with the sanitizers, -O1 -g -fno-omit-frame-pointer, every kernel (SIMD ones included) in.
    Python itself is not instrumented, so libasan must be preloaded to run it; see
    tests/fuzz/sanitize.sh, which builds such a copy away from the checkout and runs the tests.
"""
import glob
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def _compiler_accepts(flags, source="int main() { return 0; }\n"):
    """True when the C++ compiler builds `source` with `flags` (probe, no guessing)."""
    cxx = os.environ.get("CXX") or sysconfig.get_config_var("CXX") or "c++"
    cxx = cxx.split()
    if not shutil.which(cxx[0]):
        return False
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.cpp")
        with open(src, "w") as f:
            f.write(source)
        cmd = cxx + flags + [src, "-o", os.path.join(tmp, "probe")]
        try:
            r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return False
        return r.returncode == 0


OPENMP_PROBE = """
#include <omp.h>
int main() { int n = 0;
#pragma omp parallel reduction(+:n)
  n += 1;
  return n > 0 ? 0 : 1; }
"""


def sanitizer_flags():
    """(compile args, link args) for RNNCORE_SANITIZE, e.g. "address,undefined"; ([], []) when unset."""
    wanted = os.environ.get("RNNCORE_SANITIZE", "").strip()
    if not wanted or sys.platform == "win32":
        return [], []
    names = [n.strip() for n in wanted.split(",") if n.strip()]
    flag = "-fsanitize=" + ",".join(names)
    if not _compiler_accepts([flag]):
        sys.exit(f"rnncore: RNNCORE_SANITIZE={wanted}: the C++ compiler does not accept {flag}")
    # -O1 keeps the reports' lines exact and the build quick (UBSAN_OPTIONS / ASAN_OPTIONS
    # halt_on_error=1 make the first report fatal at run time).
    return [flag, "-fno-omit-frame-pointer", "-g", "-O1"], [flag]


def extension():
    sources = sorted(glob.glob(os.path.join("csrc", "**", "*.cpp"), recursive=True))
    headers = sorted(glob.glob(os.path.join("csrc", "**", "*.h"), recursive=True))
    compile_args = ["-O3", "-fvisibility=hidden", "-fno-math-errno"]
    link_args = []
    macros = []
    if sys.platform != "win32":
        if os.environ.get("RNNCORE_NO_OPENMP") != "1" and _compiler_accepts(["-fopenmp"], OPENMP_PROBE):
            compile_args.append("-fopenmp")
            link_args.append("-fopenmp")
            macros.append(("RNNCORE_OPENMP", "1"))
        else:
            print("rnncore: building without OpenMP (compiler has no -fopenmp); kernels run single-threaded")
        if os.environ.get("RNNCORE_NATIVE") == "1":
            compile_args.append("-march=native")
        if os.environ.get("RNNCORE_DEBUG") == "1":
            compile_args += ["-g", "-fno-omit-frame-pointer"]
        san_compile, san_link = sanitizer_flags()
        if san_compile:
            compile_args = [a for a in compile_args if not a.startswith("-O")] + san_compile
            link_args += san_link
    return Pybind11Extension(
        "rnncore._core",
        sources,
        depends=headers,
        include_dirs=["csrc"],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
        define_macros=macros,
        cxx_std=17,
    )


CYTHON_NEEDED = "3.0"


def cython_extensions():
    """rnncore.data._fast and rnncore.ngram._kn from their .pyx; Cython>=3 is a build requirement (pyproject.toml)."""
    try:
        import Cython
        from Cython.Build import cythonize
    except ImportError:
        sys.exit(
            "rnncore: building the extensions rnncore.data._fast and rnncore.ngram._kn needs Cython>=3, "
            "which is not installed.\n"
            "  pip install 'Cython>=3'   (pip install . installs it by itself from pyproject.toml)"
        )
    if int(Cython.__version__.split(".")[0]) < 3:
        sys.exit(f"rnncore: building rnncore.data._fast and rnncore.ngram._kn needs Cython>=3, found Cython "
                 f"{Cython.__version__}.\n  pip install --upgrade 'Cython>=3'")
    san_compile, san_link = sanitizer_flags()
    optimize = (san_compile or ["-O3"]) if sys.platform != "win32" else []
    exts = [
        Extension("rnncore.data._fast", [os.path.join("rnncore", "data", "_fast.pyx")], extra_compile_args=optimize,
                  extra_link_args=san_link),
        # n-gram counting, querying and ARPA text (C++ for std::sort and std::string)
        Extension("rnncore.ngram._kn", [os.path.join("rnncore", "ngram", "_kn.pyx")], language="c++",
                  extra_compile_args=optimize + (["-std=c++17"] if sys.platform != "win32" else []),
                  extra_link_args=san_link),
    ]
    return cythonize(exts, compiler_directives={"language_level": 3}, quiet=True)


class ParallelBuildExt(build_ext):
    """Compile the C++ sources in parallel (one job per core)."""

    def build_extensions(self):
        if self.parallel is None:
            self.parallel = os.cpu_count() or 1
        super().build_extensions()


setup(ext_modules=[extension()] + cython_extensions(), cmdclass={"build_ext": ParallelBuildExt})
