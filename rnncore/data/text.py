"""Reading text corpora from disk."""
import errno
import os

_BOM = b"\xef\xbb\xbf"


def _decode(data, path):
    """UTF-8 bytes -> str, or ValueError naming the file and the byte offset of the trouble."""
    nul = data.find(b"\x00")
    if nul >= 0:
        raise ValueError(f"read_text: {path} is not text: NUL byte at byte offset {nul} (a binary file?)")
    start = len(_BOM) if data.startswith(_BOM) else 0
    try:
        text = data[start:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = start + exc.start
        bad = data[offset: offset + 4]
        raise ValueError(f"read_text: {path} is not valid UTF-8: {exc.reason} at byte offset {offset} "
                         f"(bytes {bad!r})") from None
    # Newlines as open() reads them: \r\n and \r become \n.
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def _files_under(folder):
    """Regular files under `folder`, recursively, hidden names ('.*') skipped, in sorted path order."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found.extend(os.path.join(root, f) for f in files if not f.startswith("."))
    return sorted(found, key=lambda p: os.path.relpath(p, folder).split(os.sep))


def read_text(path):
    """The text of a UTF-8 file, or of all files under a folder.

    A folder's files (recursively, names starting with '.' skipped) are read in sorted
    path order and concatenated, with a newline added after any file that does not end
    with one, so files never run into each other. A leading UTF-8 byte-order mark is
    dropped and newlines are normalised to ``\\n`` (as ``open()`` does).

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: a file has a NUL byte or is not valid UTF-8 (the message names the
            file and the byte offset), or there is no text (an empty file; a folder with
            no files or only empty ones).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(errno.ENOENT, f"read_text: no such file or directory: {path!r}", path)
    if os.path.isdir(path):
        files = _files_under(path)
        if not files:
            raise ValueError(f"read_text: the folder {path!r} has no files to read")
    else:
        files = [path]
    parts = []
    for f in files:
        with open(f, "rb") as handle:
            text = _decode(handle.read(), repr(f))
        if text:
            parts.append(text)
    text = "".join(p if p.endswith("\n") else p + "\n" for p in parts[:-1]) + (parts[-1] if parts else "")
    if not text:
        what = f"the file {path!r} is empty" if len(files) == 1 and files[0] == path else \
            f"the {len(files)} file(s) under {path!r} are all empty"
        raise ValueError(f"read_text: {what}")
    return text
