"""rnncore/_core.pyi matches the extension rnncore._core, both ways.

Every public name of the module (and every public member of its classes) has a stub entry
and every stub entry exists; each function's parameters (names, order, the keyword-only
marker and the defaults) are the ones pybind11 states in the first line of its docstring,
``name(arg: type = default, *, ...) -> type``. When a test here fails after a binding is
added or changed, update rnncore/_core.pyi to match.
"""
import ast
import os

import pytest

from rnncore import _core

STUB = os.path.join(os.path.dirname(_core.__file__), "_core.pyi")


def _stub_tree():
    with open(STUB, encoding="utf-8") as f:
        return ast.parse(f.read(), STUB)


def _is_property(node):
    return any(isinstance(d, ast.Name) and d.id == "property" for d in node.decorator_list)


def _stub_entries():
    """{name: node} for the stub's top-level functions and classes (names starting with _ are its own aliases)."""
    entries = {}
    for node in _stub_tree().body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            entries[node.name] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if isinstance(t, ast.Name) and not t.id.startswith("_"):
                    entries[t.id] = node
    return entries


def _public(names):
    return {n for n in names if not n.startswith("_")}


def _class_members(cls):
    return _public(vars(cls)) | ({"__init__"} if "__init__" in vars(cls) else set())


def test_every_core_name_has_a_stub_entry_and_back():
    stub = set(_stub_entries())
    core = _public(dir(_core))
    assert not core - stub, f"rnncore._core names without an entry in rnncore/_core.pyi: {sorted(core - stub)}"
    assert not stub - core, f"rnncore/_core.pyi entries that rnncore._core does not have: {sorted(stub - core)}"


def test_class_members_match():
    for name, node in _stub_entries().items():
        obj = getattr(_core, name)
        if not isinstance(node, ast.ClassDef):
            assert not isinstance(obj, type), f"{name} is a class in rnncore._core, not in the stub"
            continue
        assert isinstance(obj, type), f"{name} is a class in the stub but not in rnncore._core"
        stub = {n.name: n for n in node.body if isinstance(n, ast.FunctionDef)}
        core = _class_members(obj)
        assert not core - set(stub), f"{name}: members without a stub entry: {sorted(core - set(stub))}"
        assert not set(stub) - core, f"{name}: stub members rnncore._core does not have: {sorted(set(stub) - core)}"
        for member, fn in stub.items():
            is_prop = isinstance(vars(obj)[member], property)
            assert _is_property(fn) == is_prop, \
                f"{name}.{member}: a {'property' if is_prop else 'method'} in rnncore._core, not in the stub"


# -- signatures -------------------------------------------------------------------------------


def _split_top_level(text):
    """Split on the commas outside brackets and quotes."""
    parts, depth, quote, start = [], 0, None, 0
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    if text[start:].strip():
        parts.append(text[start:].strip())
    return parts


def _docstring_params(obj, name):
    """[(name, default source or None, keyword_only)] from pybind11's signature line, or None if overloaded."""
    doc = (obj.__doc__ or "").lstrip()
    assert doc.startswith(name + "("), f"{name}: docstring does not start with its signature: {doc[:80]!r}"
    if doc.startswith(name + "(*args, **kwargs)") and "Overloaded function" in doc:
        return None
    depth, end = 0, None
    for i, ch in enumerate(doc[len(name):], len(name)):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0:
            end = i
            break
    params, kw_only = [], False
    for part in _split_top_level(doc[len(name) + 1:end]):
        if part == "*":
            kw_only = True
            continue
        head, _, default = part.partition(" = ")
        params.append((head.split(":")[0].strip(), default.strip() or None, kw_only))
    if params and params[0][0] == "self":
        params = params[1:]
    return params


def _stub_params(fn):
    a = fn.args
    positional = a.posonlyargs + a.args
    defaults = [None] * (len(positional) - len(a.defaults)) + list(a.defaults)
    params = [(p.arg, d, False) for p, d in zip(positional, defaults)]
    params += [(p.arg, d, True) for p, d in zip(a.kwonlyargs, a.kw_defaults)]
    if params and params[0][0] == "self":
        params = params[1:]
    return params


def _same_default(core_default, stub_default):
    try:
        return ast.literal_eval(core_default) == ast.literal_eval(stub_default)
    except ValueError:  # not a literal (an object's repr): the stub writes `...`
        return isinstance(stub_default, ast.Constant) and stub_default.value is Ellipsis


def _signatures():
    for name, node in _stub_entries().items():
        obj = getattr(_core, name, None)
        if isinstance(node, ast.FunctionDef):
            yield name, obj, name, node
        elif isinstance(node, ast.ClassDef) and isinstance(obj, type):
            for fn in node.body:
                if isinstance(fn, ast.FunctionDef) and not _is_property(fn) and fn.name in vars(obj):
                    yield f"{name}.{fn.name}", vars(obj)[fn.name], fn.name, fn


@pytest.mark.parametrize("qualname,obj,name,fn", list(_signatures()), ids=lambda v: v if isinstance(v, str) else "")
def test_signature_matches_the_extension(qualname, obj, name, fn):
    core = _docstring_params(obj, name)
    if core is None:
        pytest.skip(f"{qualname} is overloaded: only its name is checked")
    stub = _stub_params(fn)
    assert [(n, k) for n, _, k in stub] == [(n, k) for n, _, k in core], \
        f"{qualname}: stub parameters {[n for n, _, _ in stub]} != extension's {[n for n, _, _ in core]} " \
        "(or the keyword-only marker '*' differs)"
    for i, ((pname, stub_default, _), (_, core_default, kw_only)) in enumerate(zip(stub, core)):
        if stub_default is not None:
            assert core_default is not None, f"{qualname}: {pname} has a default in the stub, none in the extension"
            assert _same_default(core_default, stub_default), (
                f"{qualname}: {pname} defaults to {core_default} in the extension, "
                f"{ast.unparse(stub_default)} in the stub")
        elif core_default is not None:
            # Only where Python's syntax forces it: a required positional parameter follows.
            forced = not kw_only and any(d is None and not k for _, d, k in core[i + 1:])
            assert forced, f"{qualname}: {pname} defaults to {core_default} in the extension but has no stub default"


def test_stub_is_shipped_with_the_package():
    """py.typed beside the stub (PEP 561), and both listed as package data for the wheel."""
    here = os.path.dirname(_core.__file__)
    assert os.path.isfile(os.path.join(here, "py.typed"))
    root = os.path.dirname(here)
    pyproject = os.path.join(root, "pyproject.toml")
    if not os.path.isfile(pyproject):
        pytest.skip("not a source checkout (installed package): the files above are what was shipped")
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        tomllib = pytest.importorskip("tomli")
    with open(pyproject, "rb") as f:
        data = tomllib.load(f)["tool"]["setuptools"].get("package-data", {})
    assert {"py.typed", "_core.pyi"} <= set(data.get("rnncore", [])), data
