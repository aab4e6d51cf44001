"""The package's structure, measured from its own imports (ast, no code run).

- no import cycles between the package's modules (imports inside functions count);
- no module imports from a higher layer: core <- models <- procedures (fit, plan,
  sweep) <- views (plot) <- command line;
- no module imports another file's underscore names (`from ._risk import _advance`);
- no dispatch on the model variant as a string outside the models' own module.

Run as a script (`python tests/test_architecture.py`) to print the measures.
"""

from __future__ import annotations

import ast
import pathlib
import re
import sys

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "nqs_engine"

#: Layer of each module, by the first part of its dotted path inside the package
#: (the facade `__init__` re-exports everything and is not layered).
LAYERS = {
    "core": ("_custom_types", "_misc", "_presets", "_columnar", "_chunk", "_quadrature", "_params", "_breakdown", "_logs",
             "_schedule", "_risk", "_simulate", "_runs", "_io", "_metrics",
             "_synthetic"),
    "models": ("_model",),
    "procedures": ("_fit", "_plan", "_sweep", "_backtest", "_prefix", "_curves", "_distributed"),
    "views": ("plot",),
    "cli": ("cli",),
}
ORDER = list(LAYERS)


def modules() -> dict[str, pathlib.Path]:
    """Dotted module name (inside the package, `''` for the facade) -> file."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def layer(name: str) -> str | None:
    head = name.split(".")[0]
    for key, heads in LAYERS.items():
        if head in heads:
            return key
    return None


def _resolve(module: str, node: ast.ImportFrom, known: dict) -> list[tuple[str, list[str]]]:
    """The package modules an ImportFrom reaches, each with the names imported from it."""
    if node.level == 0:
        if not (node.module or "").startswith("nqs_engine"):
            return []
        base = (node.module or "")[len("nqs_engine"):].lstrip(".")
    else:
        is_package = known[module].name == "__init__.py"
        parts = module.split(".") if module else []
        if not is_package:
            parts = parts[:-1]
        up = node.level - 1
        parts = parts[: len(parts) - up] if up else parts
        base = ".".join([*parts, *(node.module.split(".") if node.module else [])])
    targets = []
    names = [a.name for a in node.names]
    if base in known:
        plain = [n for n in names if f"{base}.{n}".strip(".") not in known]
        targets.append((base, plain))
    for n in names:  # `from . import _risk`: a module imported by name
        sub = f"{base}.{n}".strip(".")
        if sub in known:
            targets.append((sub, []))
    return targets


def graph():
    """(edges {module: {imported modules}}, underscore imports [(module, source, name)])."""
    known = modules()
    edges: dict[str, set[str]] = {m: set() for m in known}
    private = []
    for module, path in known.items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                for target, names in _resolve(module, node, known):
                    if target != module:
                        edges[module].add(target)
                    for n in names:
                        if n.startswith("_") and not n.startswith("__"):
                            private.append((module, target, n))
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("nqs_engine."):
                        target = alias.name[len("nqs_engine."):]
                        if target in known:
                            edges[module].add(target)
    return edges, private


def _package_of(name: str, known) -> str:
    return name if known.get(name, pathlib.Path()).name == "__init__.py" else name.rpartition(".")[0]


def cycles(edges) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    # A module importing its own package's __init__ (which re-exports it) is not a
    # cycle of code: packages' __init__ files only re-export, so drop those edges.
    known = modules()
    clean = {m: {t for t in ts if not (known[t].name == "__init__.py"
                                        and (m == t or m.startswith(t + ".") or t == ""))}
             for m, ts in edges.items()}
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in clean[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in clean:
        if v not in index:
            visit(v)
    return out


def upward(edges) -> list[tuple[str, str]]:
    """Imports from a higher layer (the facade excluded on both ends)."""
    bad = []
    for module, targets in edges.items():
        a = layer(module)
        for target in targets:
            b = layer(target)
            if a is None or b is None:
                continue
            if ORDER.index(b) > ORDER.index(a):
                bad.append((module, target))
    return bad


def unlayered() -> list[str]:
    return [m for m in modules() if m and layer(m) is None]


_DISPATCH = re.compile(
    r"""(variant|model)\s*(==|!=)\s*["']|["'](plain|weight-norm|nqs|chinchilla)["']\s*(==|!=)"""
    r"""|(==|!=)\s*["'](plain|weight-norm|nqs|nqs-weight-norm|chinchilla)["']""")


def string_dispatch() -> list[str]:
    """Lines comparing a model's variant or kind with a string, outside the models' package."""
    found = []
    for name, path in modules().items():
        if name.startswith("_model"):
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if _DISPATCH.search(line.split("#")[0]):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{i}: {line.strip()}")
    return found


def measures() -> dict:
    edges, private = graph()
    return {
        "modules": len(edges),
        "imports": sum(len(v) for v in edges.values()),
        "cycles": cycles(edges),
        "upward": upward(edges),
        "private": private,
        "unlayered": unlayered(),
        "string_dispatch": string_dispatch(),
    }


def test_no_import_cycles():
    assert cycles(graph()[0]) == []


def test_no_imports_from_a_higher_layer():
    assert unlayered() == []
    assert upward(graph()[0]) == []


def test_no_cross_file_underscore_imports():
    assert graph()[1] == []


def test_no_string_dispatch_on_the_model():
    assert string_dispatch() == []


def test_the_library_never_imports_the_command_line():
    edges, _ = graph()
    library = [m for m in edges if layer(m) != "cli"]
    assert not [(m, t) for m in library for t in edges[m] if layer(t) == "cli"]


def test_every_model_is_registered_by_the_models_package():
    """A fresh process that imports only `nqs_engine._model` (as the command line does before
    it looks up `--model` or a parameters file's `"model"`) knows every model kind that a
    module of `nqs_engine/_model/` defines."""
    import json
    import subprocess

    defined = set()
    for path in sorted((PACKAGE / "_model").glob("*.py")):
        defined |= set(re.findall(r'^    kind: ClassVar\[str\] = "([^"]+)"', path.read_text(),
                                  re.MULTILINE))
    assert {"nqs", "chinchilla", "nqs-sizes"} <= defined
    code = "import json, nqs_engine._model as m; print(json.dumps(sorted(m.MODEL_KINDS)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=PACKAGE.parent)
    assert set(json.loads(out.stdout)) == defined


if __name__ == "__main__":
    m = measures()
    print(f"{m['modules']} modules, {m['imports']} imports between them")
    for key in ("cycles", "upward", "private", "unlayered", "string_dispatch"):
        print(f"{key}: {len(m[key])}")
        for item in m[key]:
            print(f"  {item}")
