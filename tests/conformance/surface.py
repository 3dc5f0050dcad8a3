"""Which binding names harness's source and its test doubles use, and whether a published version binds them.

The names harness uses are read from its source with `ast`, not listed by hand: starting from the variables
that hold a binding module (`trt`, `self.trt`, ...), every value reached from one of them (attribute, call,
subscript, `getattr(x, "NAME")`, a local function's return, a parameter it is passed to) is followed, and every
attribute read or written on such a value is a name the bindings must have, except the methods of Python's
built-in types (a binding's bytes or tuple results have those). A class deriving from a binding
class (`class T(trt.IProfiler)`) uses the names of the methods it overrides.
"""

from __future__ import annotations

import ast
import inspect
import json
import types
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
HARNESS = HERE.parents[1] / "harness"
# Calls into a binding also return plain Python values (bytes names, tuples of results): their methods are not
# binding names.
BUILTIN_ATTRS = frozenset().union(*(dir(t) for t in (str, bytes, int, float, tuple, list, dict)))


@dataclass(frozen=True)
class Surface:
    """The names one published version binds; `tail` surfaces hold strings that may end with a bound name."""

    package: str
    version: str
    match: str
    names: frozenset[str]

    @classmethod
    def load(cls, path: Path) -> Surface:
        data = json.loads(Path(path).read_text())
        return cls(data["package"], data["version"], data["match"], frozenset(data["names"]))

    def binds(self, name: str) -> bool:
        if name in self.names:
            return True
        return self.match == "tail" and any(s.endswith(name) for s in self.names)

    def missing(self, names) -> list[str]:
        return sorted(n for n in set(names) if not self.binds(n))


def surfaces(kind: str) -> list[Surface]:
    """Every committed surface of one kind (tensorrt, pycuda), oldest version first."""
    found = [Surface.load(p) for p in HERE.glob(f"{kind}-*.json")]
    return sorted(found, key=lambda s: tuple(int(p) for p in s.version.split(".")))


def _key(node) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
        return f"self.{node.attr}"
    return None


class _Uses:
    """Taint analysis over one module: which expressions hold binding objects, and the names read on them."""

    def __init__(self, tree: ast.Module, roots: set[str]):
        self.tree, self.tainted = tree, set(roots) | {f"self.{r}" for r in roots}
        self.returns: dict[str, tuple[bool, ...] | bool] = {}  # local function -> returns a binding value
        functions = [f for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))]
        self.functions = {f.name: f for f in functions}
        # each return statement -> its innermost function (ast.walk reaches outer functions first)
        self.owner = {r: f.name for f in functions for r in ast.walk(f) if isinstance(r, ast.Return)}
        # dataclass-like classes of this module -> their annotated fields, in order; a field given a binding
        # value holds one wherever it is read (`lane.context`)
        self.classes = {c.name: [a.target.id for a in c.body if isinstance(a, ast.AnnAssign)
                                 and isinstance(a.target, ast.Name)]
                        for c in ast.walk(tree) if isinstance(c, ast.ClassDef)}
        self.fields: set[str] = set()

    def base(self, node) -> bool:
        """Does this expression's chain (attribute / call / subscript / getattr) start at a binding value?"""
        while True:
            key = _key(node)
            if key in self.tainted or (key or "").startswith("self.") and self.returns.get(key[5:]) is True:
                return True  # a binding value, or a property returning one
            if isinstance(node, ast.Attribute) and node.attr in self.fields:
                return True
            if isinstance(node, ast.Call):
                callee = _key(node.func)
                if callee == "getattr" and node.args:
                    node = node.args[0]
                    continue
                returned = self.returns.get((callee or "").removeprefix("self."), False)
                if returned is True or (isinstance(returned, tuple) and any(returned)):
                    return True
                node = node.func
            elif isinstance(node, (ast.Attribute, ast.Subscript, ast.Starred)):
                node = node.value
            elif isinstance(node, (ast.ListComp, ast.GeneratorExp, ast.SetComp)):
                node = node.elt
            elif isinstance(node, ast.DictComp):
                node = node.value
            elif isinstance(node, (ast.Tuple, ast.List)):
                return any(self.base(e) for e in node.elts)
            else:
                return False

    def _parts(self, value) -> tuple[bool, ...] | bool:
        """Which elements of a tuple-valued expression hold binding values (True/False for a whole value)."""
        if isinstance(value, ast.Tuple):
            return tuple(self.base(e) for e in value.elts)
        if isinstance(value, ast.Call):
            returned = self.returns.get((_key(value.func) or "").removeprefix("self."))
            if isinstance(returned, tuple):
                return returned
        return self.base(value)

    def _taint(self, target, parts: tuple[bool, ...] | bool = True) -> bool:
        if isinstance(target, (ast.Tuple, ast.List)):
            if not isinstance(parts, tuple) or len(parts) != len(target.elts):
                parts = (parts if isinstance(parts, bool) else any(parts),) * len(target.elts)
            return any([self._taint(t, p) for t, p in zip(target.elts, parts, strict=True)])
        key = _key(target.value if isinstance(target, ast.Starred) else target)
        if not (parts if isinstance(parts, bool) else any(parts)) or key is None or key in self.tainted:
            return False
        self.tainted.add(key)
        return True

    def propagate(self) -> None:
        changed = True
        while changed:
            changed = False
            for node in ast.walk(self.tree):
                if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
                    for target in getattr(node, "targets", [getattr(node, "target", None)]):
                        changed |= self._taint(target, self._parts(node.value))
                elif isinstance(node, (ast.For, ast.comprehension)) and self.base(node.iter):
                    changed |= self._taint(node.target)
                elif isinstance(node, ast.withitem) and node.optional_vars and self.base(node.context_expr):
                    changed |= self._taint(node.optional_vars)
                elif isinstance(node, ast.Return) and node.value is not None:
                    changed |= self._returned(node)
                elif isinstance(node, ast.Call):
                    changed |= self._parameters(node)

    def _returned(self, node: ast.Return) -> bool:
        name, parts = self.owner[node], self._parts(node.value)
        before = self.returns.get(name, False)
        if isinstance(parts, tuple) and isinstance(before, tuple) and len(parts) == len(before):
            parts = tuple(a or b for a, b in zip(parts, before, strict=True))
        elif before is True or not (parts if isinstance(parts, bool) else any(parts)):
            return False
        if parts == before:
            return False
        self.returns[name] = parts
        return True

    def _parameters(self, call: ast.Call) -> bool:
        """A binding value passed to a function of this module taints the parameter it lands in (or, for a
        class of this module, the field)."""
        name = (_key(call.func) or "").removeprefix("self.")
        func = self.functions.get(name)
        if name in self.classes:
            params, taint = self.classes[name], self.fields
        elif func is not None:
            params = [a.arg for a in func.args.posonlyargs + func.args.args if a.arg != "self"]
            taint = self.tainted
        else:
            return False
        given = [(params[i], arg) for i, arg in enumerate(call.args) if i < len(params)]
        given += [(kw.arg, kw.value) for kw in call.keywords if kw.arg in params]
        new = {param for param, arg in given if param not in taint and self.base(arg)}
        taint |= new
        return bool(new)

    def names(self) -> dict[str, int]:
        """Name -> first line it is used on."""
        self.propagate()
        used: dict[str, int] = {}
        for node in ast.walk(self.tree):
            if (isinstance(node, ast.Attribute) and _key(node) not in self.tainted and self.base(node.value)
                    and node.attr not in BUILTIN_ATTRS):
                used.setdefault(node.attr, node.lineno)
            elif (isinstance(node, ast.Call) and _key(node.func) in ("getattr", "hasattr", "setattr")
                  and len(node.args) >= 2 and self.base(node.args[0]) and isinstance(node.args[1], ast.Constant)):
                used.setdefault(node.args[1].value, node.lineno)
            elif isinstance(node, ast.ClassDef) and any(self.base(b) for b in node.bases):
                for item in node.body:
                    if isinstance(item, ast.FunctionDef) and not item.name.startswith("_"):
                        used.setdefault(item.name, item.lineno)
        return used


def used_names(source: str, roots: set[str]) -> dict[str, int]:
    """Binding names one module's source uses, with the line of first use."""
    return _Uses(ast.parse(source), roots).names()


def harness_uses(roots: set[str], package: Path = HARNESS) -> dict[str, str]:
    """Binding names used anywhere in harness's source -> 'path:line' of a first use."""
    found: dict[str, str] = {}
    for path in sorted(package.rglob("*.py")):
        for name, line in used_names(path.read_text(), roots).items():
            found.setdefault(name, f"{path.relative_to(package.parent)}:{line}")
    return found


def _class_names(cls: type) -> set[str]:
    if issubclass(cls, BaseExceptionType := BaseException):
        own = [c for c in cls.__mro__ if c not in BaseExceptionType.__mro__ and c is not cls]
        return {n for c in (cls, *own) for n in vars(c) if not n.startswith("_")}
    if hasattr(cls, "__members__"):  # enum: its members
        return set(cls.__members__)
    names = set()
    for klass in cls.__mro__:
        if klass.__module__ != cls.__module__:  # object, numpy.ndarray...: not what the double offers
            continue
        names |= {n for n in vars(klass) if not n.startswith("_")}
        names |= {s for s in getattr(klass, "__slots__", ()) if not s.startswith("_")}
    return names


def module_surface(module: types.ModuleType, package: str, version: str) -> Surface:
    """The surface of an importable binding module (cuda-python's wheels import without a GPU)."""
    names = set(dir(module))
    for value in vars(module).values():
        if inspect.isclass(value):
            names |= set(dir(value))
    return Surface(package, version, "exact", frozenset(names))


def offered_names(module: types.ModuleType) -> set[str]:
    """What a test double lets code reach: its public attributes and those of its classes (private: `_x`)."""
    names = set()
    for name, value in vars(module).items():
        if name.startswith("_") and name != "__version__" or isinstance(value, types.ModuleType):
            continue
        names.add(name)
        if inspect.isclass(value):
            names |= _class_names(value)
    return names
