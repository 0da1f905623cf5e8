"""lazymask's packages talk through their ``__init__`` exports, and data flows one way.

Walks every import statement in ``lazymask/`` (module level and inside functions) and fails on
(1) an import of another package's private module (``lazymask.image._resample`` from
``lazymask.maskers``), (2) an import from a higher layer (DESIGN.md's order) unless it is one of
the documented exceptions of :data:`UPWARD_EXCEPTIONS`, and (3) a masker imported by ``datasets``
or ``testing``, and (4) a name taken from another package that its ``__all__`` does not list.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lazymask"

#: DESIGN.md's layers, lowest first; a unit may import only from units of a lower or equal rank.
#: ``config`` and ``exceptions`` are below everything; ``interfaces`` sits beside ``io``;
#: ``datasets`` and ``testing`` sit beside the stack and import no masker. ``_progress`` (the CLI's
#: progress bar, a private top-level module used by ``cli`` only) imports nothing of lazymask's,
#: so it sits at the bottom with ``config``.
RANK = {
    "exceptions": 0, "config": 0, "_progress": 0, "_blas": 0, "_pages": 0,
    "storage": 0.5, "io": 1, "interfaces": 2,
    "image": 3, "masking": 4, "signal": 5, "regions": 6, "maskers": 7,
    "reporting": 8, "plotting": 9, "archive": 10, "nilearn": 10, "cli": 11, "__main__": 12,
    "datasets": 6, "testing": 6,
}


#: The imports from a higher layer that nilearn's API places there, with the reason. Each is made
#: inside the function that needs it, so importing the lower layer never loads the higher one and
#: the module graph stays acyclic (``test_upward_exceptions_are_local_and_used`` keeps it so).
UPWARD_EXCEPTIONS = {
    ("lazymask/image/_signal_images.py", "lazymask.masking"):
        "nilearn.image has clean_img and high_variance_confounds; they mask with apply_mask/unmask",
    ("lazymask/image/_signal_images.py", "lazymask.signal"):
        "nilearn.image has clean_img and high_variance_confounds; they call signal.clean and "
        "signal.high_variance_confounds",
    ("lazymask/maskers/_base.py", "lazymask.reporting"):
        "nilearn's maskers have generate_report(); it delegates to reporting.report_for(masker), "
        "which reads fitted attributes and imports no masker",
}


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(relative.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def _imports(module: str, path: Path, *, module_level: bool = False):
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in _module_level_nodes(tree) if module_level else ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield node.lineno, target
            for alias in node.names:  # ``from lazymask import maskers``, ``from lazymask.image import _resample``
                if target == "lazymask" or alias.name.startswith("_"):
                    yield node.lineno, f"{target}.{alias.name}"


def _module_level_nodes(tree):
    """The statements that run at import: the module body, descending into if/try/with, not defs."""
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            todo.extend(child for child in ast.iter_child_nodes(node) if isinstance(child, ast.stmt))


def _violations():
    found = []
    for module, path in _modules():
        unit = _unit(module)
        for line, target in _imports(module, path):
            if not target.startswith("lazymask.") or unit == "__init__":
                continue
            other = _unit(target)
            where = f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}"
            if other != unit and any(part.startswith("_") for part in target.split(".")[2:]):
                found.append(f"{where}: a private module of lazymask.{other}; export the name from its __init__")
            exception = (str(path.relative_to(PACKAGE.parent)), f"lazymask.{other}")
            if other in RANK and unit in RANK and RANK[other] > RANK[unit] and exception not in UPWARD_EXCEPTIONS:
                found.append(f"{where}: lazymask.{other} is a higher layer than lazymask.{unit}")
            if unit in ("datasets", "testing") and other == "maskers":
                found.append(f"{where}: {unit} imports no masker")
    return found


def test_every_unit_has_a_layer():
    units = {_unit(module) for module, _ in _modules()} - {"__init__"}
    assert units <= set(RANK), f"add {sorted(units - set(RANK))} to RANK (DESIGN.md's layers)"


def test_packages_use_each_other_through_init_and_downwards_only():
    found = _violations()
    assert not found, "\n".join(found)


def test_upward_exceptions_are_local_and_used():
    """Each documented exception is still needed, and is never imported when its module loads."""
    modules = dict((str(path.relative_to(PACKAGE.parent)), (module, path)) for module, path in _modules())
    for (where, target), reason in UPWARD_EXCEPTIONS.items():
        assert reason and where in modules, f"{where} is gone: drop its entry of UPWARD_EXCEPTIONS"
        module, path = modules[where]
        used = {name for _, name in _imports(module, path) if name == target or name.startswith(target + ".")}
        assert used, f"{where} no longer imports {target}: drop its entry of UPWARD_EXCEPTIONS"
        at_load = {name for _, name in _imports(module, path, module_level=True)
                   if name == target or name.startswith(target + ".")}
        assert not at_load, f"{where} imports {target} at module level; import it inside the function"


def test_the_walker_finds_what_it_must(tmp_path):
    """The walker sees a private import inside a function and an upward import at module level."""
    source = tmp_path / "mod.py"
    source.write_text("from lazymask.io import Grid\n"
                      "def f():\n    from lazymask.image._resample import resample_array\n"
                      "    from ..maskers import NiftiMasker\n"
                      "    from lazymask import reporting\n")
    found = list(_imports("lazymask.masking.mod", source))
    assert (3, "lazymask.image._resample") in found
    assert (4, "lazymask.maskers") in found
    assert (5, "lazymask.reporting") in found
    assert list(_imports("lazymask.masking.mod", source, module_level=True)) == [(1, "lazymask.io")]


def _exported(unit: str) -> set[str] | None:
    """The ``__all__`` of ``lazymask.<unit>`` (read from its source), or None when it has none."""
    path = PACKAGE / unit / "__init__.py"
    path = path if path.exists() else PACKAGE / f"{unit}.py"
    for node in ast.parse(path.read_text()).body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        if any(getattr(target, "id", None) == "__all__" for target in targets):
            return set(ast.literal_eval(node.value))
    return None


def test_names_taken_from_another_package_are_in_its_all():
    found = []
    for module, path in _modules():
        unit = _unit(module)
        if unit == "__init__":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                    and node.module.count(".") == 1 and node.module.startswith("lazymask.")):
                continue
            other = node.module.split(".")[1]
            if other == unit:
                continue
            exported = _exported(other)
            for alias in node.names:
                if exported is None or alias.name not in exported:
                    found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} imports {alias.name} from "
                                 f"{node.module}, which its __all__ does not list")
    assert not found, "\n".join(found)
