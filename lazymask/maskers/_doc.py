"""nilearn's layout of a masker's class doc: each parameter on its own line, in ``__init__``'s order,
and every fitted attribute (a Multi masker's taken from its single-run masker's doc)."""

from __future__ import annotations

import inspect

__all__ = ["nilearn_doc"]

# Fitted attributes every masker's fit sets (BaseMasker.fit), for the classes whose doc omits them.
_COMMON_ATTRIBUTES = {
    "clean_args_": ("dict", ["The ``clean_args`` used by ``transform`` (an empty dict for None)."]),
    "mean_img_": ("xarray.DataArray or None",
                  ["The lazy mean of the first fitted image, drawn in the report (None without images "
                   "or with ``reports=False``)."]),
}


def _doc_sections(doc: str) -> tuple[str, dict[str, list[str]]]:
    """The text before the first numpydoc section, and each section's lines (dedented)."""
    lines = inspect.cleandoc(doc or "").splitlines()
    intro, sections, current = [], {}, None
    for i, line in enumerate(lines):
        if i + 1 < len(lines) and line.strip() and set(lines[i + 1].strip()) == {"-"} and not line.startswith(" "):
            current = line.strip()
            sections[current] = []
            continue
        if current is not None and sections[current] == [] and set(line.strip()) == {"-"}:
            continue
        (intro if current is None else sections[current]).append(line)
    return "\n".join(intro).strip(), sections


def _doc_entries(lines: list[str]) -> dict[str, tuple[str, list[str]]]:
    """``name -> (type, description lines)`` of a Parameters/Attributes section; grouped names split."""
    entries, names = {}, []
    for line in lines:
        if line and not line.startswith(" "):
            head, _, kind = line.partition(" : ")
            names = [name.strip() for name in head.split(",") if name.strip()]
            for name in names:
                entries[name] = (kind.strip(), [])
        elif names:
            for name in names:
                entries[name][1].append(line)
    return entries


def _render(entries) -> list[str]:
    lines = []
    for name, (kind, description) in entries:
        lines.append(f"{name} : {kind}" if kind else name)
        while description and not description[-1].strip():
            description = description[:-1]
        lines.extend(description)
    return lines


def nilearn_doc(cls, header: str = "") -> str:
    """``cls``'s doc in nilearn's layout: every parameter on its own, in ``__init__``'s order, and
    every fitted attribute (entries the class's doc lacks come from its base classes' docs).

    Examples
    --------
    >>> class Masker:
    ...     '''A masker.
    ...
    ...     Parameters
    ...     ----------
    ...     a, b : int
    ...         Two numbers.
    ...     '''
    ...     def __init__(self, b=1, a=2):
    ...         pass
    >>> print(nilearn_doc(Masker).split("Attributes")[0].strip())
    A masker.
    <BLANKLINE>
    Parameters
    ----------
    b : int, default=1
        Two numbers.
    a : int, default=2
        Two numbers.
    """
    intro, sections = _doc_sections(cls.__doc__)
    parent: dict = {"Parameters": [], "Attributes": []}
    for base in reversed(cls.__mro__[1:]):
        if base.__doc__ and base.__module__.startswith("lazymask."):
            base_sections = _doc_sections(base.__doc__)[1]
            for key in parent:
                parent[key] += base_sections.get(key, [])
    parameters = {**_doc_entries(parent.get("Parameters", [])), **_doc_entries(sections.get("Parameters", []))}
    attributes = {**_doc_entries(parent.get("Attributes", [])), **_doc_entries(sections.get("Attributes", []))}
    signature = inspect.signature(cls.__init__).parameters
    ordered = []
    for name, parameter in list(signature.items())[1:]:
        kind, description = parameters.get(name, ("", [f"    See :class:`lazymask.maskers.{cls.__name__}`."]))
        if parameter.default is not inspect.Parameter.empty and "default=" not in kind:
            kind = f"{kind}, default={parameter.default!r}" if kind else f"default={parameter.default!r}"
        ordered.append((name, (kind, description)))
    for name, entry in _COMMON_ATTRIBUTES.items():
        attributes.setdefault(name, (entry[0], ["    " + line for line in entry[1]]))
    text = [*([header, ""] if header else []), intro, "",
        "Parameters", "----------", *_render(ordered), "",
        "Attributes", "----------", *_render(sorted(attributes.items())), "",
    ]
    for title, lines in sections.items():
        if title not in ("Parameters", "Attributes"):
            text += [title, "-" * len(title), *lines, ""]
    return "\n".join(text)


