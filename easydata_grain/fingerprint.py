"""A pipeline's fingerprint: what a saved loader state is only valid for."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import operator
import re
import sys
import types
from typing import Any

import numpy as np

from easydata_grain.op_protocols import Fingerprinted


def digest(value: Any) -> str:
    """A short, stable hash of a JSON-serializable value."""
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def describe(fn: Any) -> str:
    """A stable name for a transform: its class or function, module-qualified, and what it does:
    its ``fingerprint()`` when it is ``Fingerprinted`` (a tokenizer by its content, not its
    name), else its fields."""
    kind = fn if isinstance(fn, type) else type(fn)
    if isinstance(fn, Fingerprinted) and not isinstance(fn, type):
        return f"{kind.__module__}.{kind.__qualname__}#{fn.fingerprint()}"
    if dataclasses.is_dataclass(fn) and not isinstance(fn, type):
        fields = {f.name: getattr(fn, f.name) for f in dataclasses.fields(fn)}
        return f"{kind.__module__}.{kind.__qualname__}{fields}"  # nested values included
    if callable(fn) and not isinstance(fn, type):
        return callable_identity(fn)
    fields = getattr(fn, "__dict__", {})
    shown = {k: v for k, v in sorted(fields.items()) if isinstance(v, int | float | str | bool)}
    code = digest(_object(fn, set()))  # a Grain Map subclass: its map() code and fields
    return f"{kind.__module__}.{kind.__qualname__}{shown if shown else ''}#{code}"


def callable_identity(fn: Any) -> str:
    """A function's name with a hash of what it does, stable across processes: its bytecode
    and constants, its defaults, the values its closure holds and the module-level values it
    reads (and the functions it calls through a module of the program's own, ``utils.clean``).
    Editing a lambda's body, or a value it captures, changes the identity, so a cache or a
    saved state made with the old function is not taken for the new one.

    Values are hashed by content when they are immutable data (numbers, strings, tuples and
    frozensets of them), compiled regular expressions, ``operator.itemgetter``/``attrgetter``/
    ``methodcaller``, numpy arrays, fingerprinted objects and tokenizers; an object by the code
    of its class's methods and its fields. A list, dict or set is taken by its type alone: a
    function often keeps a counter or a memo in one, and its contents change as rows are read
    (keep constant data in a tuple or a frozenset)."""
    named = fn if hasattr(fn, "__qualname__") else type(fn)  # a callable object: its class
    name = f"{getattr(named, '__module__', None) or '?'}.{named.__qualname__}"
    return f"{name}#{digest(_behaviour(fn, set()))}"


_SCALARS = (str, int, float, bool, bytes, type(None))


def _behaviour(value: Any, seen: set[int]) -> Any:
    """A JSON-able description of what ``value`` is or does (see ``callable_identity``)."""
    if isinstance(value, _SCALARS):
        return value if not isinstance(value, bytes) else hashlib.sha256(value).hexdigest()
    if id(value) in seen:  # a recursive function, a container holding itself
        return "<recursion>"
    seen = seen | {id(value)}
    if isinstance(
        value, list | dict | set | bytearray
    ):  # a counter, a memo: it changes as rows run
        return f"mutable {type(value).__name__}"
    if isinstance(value, tuple):
        return ["tuple", [_behaviour(v, seen) for v in value]]
    if isinstance(value, frozenset):
        return sorted(json.dumps(_behaviour(v, seen), default=str) for v in value)
    if isinstance(value, re.Pattern):
        return ["re", _behaviour(value.pattern, seen), value.flags]
    if isinstance(value, operator.itemgetter | operator.attrgetter | operator.methodcaller):
        return repr(value)  # its arguments: operator.itemgetter('text')
    if isinstance(value, Fingerprinted) and not isinstance(value, type):
        return value.fingerprint()
    if isinstance(value, types.ModuleType):
        return f"module {value.__name__}"  # its functions a function calls: see _function
    if isinstance(value, type):
        return f"class {value.__module__}.{value.__qualname__}"
    if isinstance(value, types.FunctionType):
        return _function(value, seen)
    if isinstance(value, types.MethodType):
        return [_behaviour(value.__self__, seen), _function(value.__func__, seen)]
    if isinstance(value, functools.partial):
        return [_behaviour(v, seen) for v in (value.func, value.args, value.keywords)]
    if isinstance(value, types.BuiltinFunctionType):
        owner = value.__self__  # a module, or the object of a bound method (a regex's sub)
        if owner is None or isinstance(owner, types.ModuleType):
            return f"builtin {getattr(owner, '__name__', '')}.{value.__qualname__}"
        return [f"builtin {value.__qualname__}", _behaviour(owner, seen)]
    return _object(value, seen)


def _function(fn: types.FunctionType, seen: set[int]) -> Any:
    code = fn.__code__
    names = _names(code)
    read = {name: fn.__globals__[name] for name in names if name in fn.__globals__}
    for name, value in list(read.items()):  # utils.clean(...): clean's code too
        if isinstance(value, types.ModuleType) and _programs_own(value):
            for attribute in sorted(names & set(vars(value))):
                read[f"{name}.{attribute}"] = getattr(value, attribute)
    return {
        "code": _code(code),
        "defaults": _behaviour(fn.__defaults__, seen),
        "kwdefaults": _behaviour(fn.__kwdefaults__, seen),
        "closure": [_behaviour(_contents(cell), seen) for cell in fn.__closure__ or ()],
        "globals": {name: _behaviour(v, seen) for name, v in sorted(read.items())},
    }


def _contents(cell: types.CellType) -> Any:
    try:
        return cell.cell_contents
    except ValueError:  # a name of the enclosing function not assigned yet
        return "<empty cell>"


def _code(code: types.CodeType) -> Any:
    """Bytecode, constants (nested functions' code too) and names; not line numbers."""
    consts = [
        _code(c) if isinstance(c, types.CodeType) else _behaviour(c, set()) for c in code.co_consts
    ]
    return [code.co_code.hex(), consts, list(code.co_names)]


def _names(code: types.CodeType) -> set[str]:
    """The global names a code object (and the functions defined in it) may read."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return names


def _programs_own(module: types.ModuleType) -> bool:
    """Whether a module is the program's own (not the standard library's or an installed
    package's), whose functions a transform's identity follows."""
    path = getattr(module, "__file__", None) or ""  # none: a notebook's __main__
    installed = "site-packages" in path or "dist-packages" in path
    return not installed and module.__name__.split(".")[0] not in sys.stdlib_module_names


def _methods(kind: type, seen: set[int]) -> dict[str, Any]:
    """The code of the functions a class and its bases of the program's own modules define
    (an installed library's classes count by name: their code is the library's version)."""
    found: dict[str, types.FunctionType] = {}
    for base in reversed(kind.__mro__):
        module = sys.modules.get(base.__module__)
        if module is not None and not _programs_own(module):
            continue
        for name, member in vars(base).items():
            member = member.__func__ if isinstance(member, staticmethod | classmethod) else member
            if isinstance(member, types.FunctionType):
                found[name] = member
    return {name: _function(fn, seen) for name, fn in sorted(found.items())}


def _object(value: Any, seen: set[int]) -> Any:
    """Tokenizers and numpy arrays by content; an object by its class's methods (their code:
    a Grain ``Map``'s ``map``, a callable's ``__call__`` and the methods it calls) and its
    fields; anything else by its type."""
    kind = type(value)
    name = f"{kind.__module__}.{kind.__qualname__}"
    if kind.__module__.split(".")[0] in ("transformers", "tokenizers"):
        from easydata_grain.transforms.tokenizer_identity import tokenizer_fingerprint

        try:
            return [name, tokenizer_fingerprint(value)]
        except TypeError:
            return name
    if isinstance(value, np.ndarray | np.generic):
        return [name, str(value.dtype), hashlib.sha256(value.tobytes()).hexdigest()]
    fields = getattr(value, "__dict__", None)
    methods = _methods(kind, seen)
    if methods or isinstance(fields, dict):
        plain = [[k, _behaviour(v, seen)] for k, v in sorted((fields or {}).items())]
        return [name, methods, plain]
    return name


def differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The components that differ between two fingerprints, in words."""
    keys = sorted(set(saved) | set(current))
    return [
        f"{key}: saved {saved.get(key)!r}, now {current.get(key)!r}"
        for key in keys
        if saved.get(key) != current.get(key)
    ]
