"""The :class:`Report` container: figures, sentences and tables rendered as one standalone HTML page.

Contract
--------
- A report holds plain data only: a title, figures (PNG bytes or SVG text), summary sentences,
  warnings, a parameter table and named extra tables. It never holds an estimator or an image.
- The HTML is standalone: images are embedded as base64 ``data:`` URIs, the CSS is inline and
  scoped to the report's ``<div>``, and nothing is fetched (no link; no script but scikit-learn's
  inline one in ``estimator_html``).
- ``estimator_html`` (scikit-learn's view of the estimator, set by ``generate_report``) is the only
  markup shown as is; it carries scikit-learn's small inline script and style.
- nilearn's ``HTMLReport`` interface: ``body`` / ``str(report)`` / ``_repr_html_()`` are the HTML
  fragment, ``get_iframe()``, ``resize()``, ``width`` / ``height`` (a value that is not an int:
  the default, with nilearn's warning), ``save_as_html()``, ``open_in_browser()``.
- Every string that comes from the caller (title, sentences, parameter names and values, table
  cells, captions) is escaped with :func:`html.escape`; SVG figures are base64-encoded, never
  inlined, so they cannot inject markup either.
"""

from __future__ import annotations

import base64
import html
import tempfile
import warnings as _warnings
import webbrowser
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lazymask.exceptions import ParameterError

__all__ = ["HTMLReport", "Report"]

#: nilearn's default size of a report's inline frame (``get_iframe``), in pixels.
WIDTH_DEFAULT = 800
HEIGHT_DEFAULT = 800

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

_CSS = """
.lazymask-report {font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
  font-size: 14px; color: #222; max-width: 1000px; margin: 0 auto; padding: 0.5em;}
.lazymask-report h2 {font-size: 1.4em; margin: 0.3em 0;}
.lazymask-report h3 {font-size: 1.1em; margin: 0.8em 0 0.3em 0;}
.lazymask-report figure {margin: 0.5em 0;}
.lazymask-report img {max-width: 100%; height: auto; display: block;}
.lazymask-report figcaption {font-size: 0.9em; color: #555;}
.lazymask-report .lm-warning {background: #fff3cd; border-left: 4px solid #e0a800;
  padding: 0.3em 0.6em; margin: 0.3em 0;}
.lazymask-report table {border-collapse: collapse; margin: 0.3em 0;}
.lazymask-report th, .lazymask-report td {border: 1px solid #ccc; padding: 2px 8px;
  text-align: left; vertical-align: top; white-space: pre-wrap;}
.lazymask-report th {background: #f0f0f0;}
.lazymask-report .lm-scroll {max-height: 400px; overflow: auto;}
.lazymask-report summary {cursor: pointer; font-weight: bold;}
"""


def _figure_data_uri(figure: bytes | str) -> str:
    """Return a ``data:`` URI for PNG bytes or SVG text, or raise if it is neither."""
    if isinstance(figure, (bytes, bytearray, memoryview)):
        raw = bytes(figure)
        if not raw.startswith(PNG_SIGNATURE):
            raise ParameterError(
                f"figure is {len(raw)} bytes that do not start with the PNG signature; "
                "pass PNG bytes (for example from Figure.savefig(buffer, format='png')) "
                "or SVG text."
            )
        return "data:image/png;base64," + base64.b64encode(raw).decode("ascii")
    if isinstance(figure, str):
        if "<svg" not in figure[:4096]:
            raise ParameterError(
                "figure is a string without an '<svg' element; pass SVG text or PNG bytes."
            )
        return "data:image/svg+xml;base64," + base64.b64encode(figure.encode("utf-8")).decode("ascii")
    raise ParameterError(
        f"figure is a {type(figure).__name__}; expected PNG bytes or SVG text (str)."
    )


def _format_value(value: Any) -> str:
    """Return a short, readable text for a parameter value (arrays printed compactly)."""
    if isinstance(value, np.ndarray):
        return np.array2string(value, threshold=20, precision=4, max_line_width=80)
    if isinstance(value, float):
        return f"{value:g}"
    text = str(value)
    return text if len(text) <= 500 else text[:497] + "..."


def _as_columns(name: str, table: Mapping[str, Sequence[Any]]) -> dict[str, list[Any]]:
    """Check a table given as ``{column: values}`` (all columns of one length) and copy it."""
    columns = {str(key): list(values) for key, values in table.items()}
    lengths = {key: len(values) for key, values in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ParameterError(
            f"table {name!r} has columns of different lengths {lengths}; "
            "give every column one value per row."
        )
    return columns


def _html_table(columns: Mapping[str, Sequence[Any]]) -> str:
    """Render ``{column: values}`` as an escaped HTML table."""
    header = "".join(f"<th>{html.escape(key)}</th>" for key in columns)
    n_rows = len(next(iter(columns.values()), []))
    rows = []
    for row in range(n_rows):
        cells = "".join(
            f"<td>{html.escape(_format_value(values[row]))}</td>" for values in columns.values()
        )
        rows.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


class Report:
    """An HTML report: a title, figures, summary sentences and tables.

    Parameters
    ----------
    title : str
        Shown as the page heading and the HTML ``<title>``.
    figures : iterable of bytes or str, optional
        PNG bytes or SVG text, shown in order. Use :meth:`add_figure` to give a caption.
    sentences : iterable of str, optional
        Short summary sentences shown under the figures.
    parameters : mapping, optional
        Parameter name to value, shown as a two-column table.
    tables : mapping, optional
        Extra tables, each ``{heading: {column: values}}`` (for example regions).
    warnings : iterable of str, optional
        Shown highlighted above the figures.

    Examples
    --------
    >>> report = Report("NiftiMasker", sentences=["The mask includes 10 voxels (1.0 %) of the image."],
    ...                 parameters={"smoothing_fwhm": 6.0})
    >>> report
    <Report 'NiftiMasker': 0 figures, 1 sentence, 1 parameter, 0 tables>
    >>> "smoothing_fwhm" in report.get_html()
    True
    """

    def __init__(
        self,
        title: str,
        figures: Iterable[bytes | str] = (),
        sentences: Iterable[str] = (),
        parameters: Mapping[str, Any] | None = None,
        tables: Mapping[str, Mapping[str, Sequence[Any]]] | None = None,
        warnings: Iterable[str] = (),
        estimator_html: str = "",
    ) -> None:
        self.title = str(title)
        #: scikit-learn's HTML view of the estimator (trusted markup, shown as is), or "".
        self.estimator_html = str(estimator_html)
        self.width = WIDTH_DEFAULT
        self.height = HEIGHT_DEFAULT
        self.figures: list[tuple[bytes | str, str]] = []
        for figure in figures:
            self.add_figure(figure)
        self.sentences = [str(sentence) for sentence in sentences]
        self.parameters = dict(parameters or {})
        self.tables: dict[str, dict[str, list[Any]]] = {}
        for name, table in (tables or {}).items():
            self.add_table(name, table)
        self.warnings = [str(warning) for warning in warnings]

    # -- building -------------------------------------------------------------------------------
    def add_figure(self, figure: bytes | str, caption: str = "", overlay: bool = False) -> None:
        """Append a figure (PNG bytes or SVG text) with an optional caption.

        ``overlay=True`` marks a figure that overlays a second state (for example the mask
        before resampling); it is shown in a ``<div class="overlay">``.
        """
        _figure_data_uri(figure)  # validate now, not when rendering
        self.figures.append((figure, str(caption)))
        if overlay:
            self._overlays = getattr(self, "_overlays", set()) | {len(self.figures) - 1}

    def add_sentence(self, sentence: str) -> None:
        """Append a summary sentence."""
        self.sentences.append(str(sentence))

    def add_warning(self, warning: str) -> None:
        """Append a warning, shown highlighted at the top of the report."""
        self.warnings.append(str(warning))

    def add_table(self, name: str, table: Mapping[str, Sequence[Any]]) -> None:
        """Add (or replace) a table given as ``{column: values}``."""
        self.tables[str(name)] = _as_columns(str(name), table)

    # -- rendering ------------------------------------------------------------------------------
    def _body_html(self) -> str:
        """The report as an HTML fragment (one ``<div>`` with its scoped ``<style>``)."""
        parts = [f"<style>{_CSS}</style>", f"<h2>{html.escape(self.title)}</h2>"]
        if self.warnings:
            parts.append('<div id="warnings">' + "".join(
                f'<p class="lm-warning">{html.escape(w)}</p>' for w in self.warnings) + "</div>")
        overlays = getattr(self, "_overlays", set())
        for index, (figure, caption) in enumerate(self.figures):
            alt = html.escape(caption or f"{self.title} figure", quote=True)
            figcaption = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
            css = "overlay" if index in overlays else "image"
            parts.append(
                f'<div class="{css}"><figure><img src="{_figure_data_uri(figure)}" alt="{alt}"/>'
                f"{figcaption}</figure></div>"
            )
        parts += [f"<p>{html.escape(sentence)}</p>" for sentence in self.sentences]
        for name, table in self.tables.items():
            parts.append(
                f"<details open><summary>{html.escape(name)}</summary>"
                f'<div class="lm-scroll">{_html_table(table)}</div></details>'
            )
        if self.estimator_html:
            parts.append(f"<h3>Parameters</h3>{self.estimator_html}")
        elif self.parameters:
            parameter_table = {
                "parameter": list(self.parameters),
                "value": list(self.parameters.values()),
            }
            parts.append(f"<h3>Parameters</h3>{_html_table(parameter_table)}")
        return '<div class="lazymask-report">' + "\n".join(parts) + "</div>"

    def _repr_html_(self) -> str:
        """The HTML fragment Jupyter shows (:attr:`body`)."""
        return self.body

    @property
    def body(self) -> str:
        """The report as an HTML fragment (nilearn's ``HTMLReport.body``)."""
        return self._body_html()

    @property
    def html(self) -> str:
        """The standalone HTML document (nilearn's ``HTMLDocument.html``); see :meth:`get_html`."""
        return self.get_html()

    # -- nilearn's HTMLDocument interface ---------------------------------------------------------
    @property
    def width(self) -> int:
        """Width of the inline frame of :meth:`get_iframe`, in pixels (not an int: the default, warned)."""
        return self._width

    @width.setter
    def width(self, value) -> None:
        self._width = _frame_size("width", value, WIDTH_DEFAULT)

    @property
    def height(self) -> int:
        """Height of the inline frame of :meth:`get_iframe`, in pixels."""
        return self._height

    @height.setter
    def height(self, value) -> None:
        self._height = _frame_size("height", value, HEIGHT_DEFAULT)

    def resize(self, width, height) -> Report:
        """Set the size of the inline frame (:meth:`get_iframe`) and return the report."""
        self.width, self.height = width, height
        return self

    def get_iframe(self, width=None, height=None) -> str:
        """The standalone document in an ``<iframe srcdoc=...>`` (for embedding in a page)."""
        width = self.width if width is None else width
        height = self.height if height is None else height
        return (f'<iframe srcdoc="{html.escape(self.get_html(), quote=True)}" width="{width}" '
                f'height="{height}" frameBorder="0"></iframe>')

    def get_standalone(self) -> str:
        """The standalone HTML document (as :meth:`get_html`)."""
        return self.get_html()

    def open_in_browser(self, file_name: str | Path | None = None) -> Path:
        """Write the document to ``file_name`` (default: a temporary file), open it in a browser.

        Returns the path written.
        """
        if file_name is None:
            with tempfile.NamedTemporaryFile("w", suffix=".html", delete=False) as handle:
                file_name = handle.name
        path = self.save_as_html(file_name)
        webbrowser.open(path.resolve().as_uri())
        return path

    def get_html(self) -> str:
        """Return the report as one standalone HTML document (no external resources)."""
        return (
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n"
            f"<title>{html.escape(self.title)} report</title>\n</head>\n<body>\n"
            f"{self._body_html()}\n</body>\n</html>\n"
        )

    def save_as_html(self, path: str | Path) -> Path:
        """Write the standalone HTML document to ``path`` (UTF-8) and return the path.

        Examples
        --------
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "report.html"
        >>> Report("NiftiMasker").save_as_html(path).exists()
        True
        """
        path = Path(path)
        path.write_text(self.get_html(), encoding="utf-8")
        return path

    def __str__(self) -> str:
        """The HTML fragment (:attr:`body`), as nilearn's ``str(report)``."""
        return self.body

    def __repr__(self) -> str:
        def count(n: int, word: str) -> str:
            return f"{n} {word}{'' if n == 1 else 's'}"

        return (
            f"<Report {self.title!r}: {count(len(self.figures), 'figure')}, "
            f"{count(len(self.sentences), 'sentence')}, "
            f"{count(len(self.parameters), 'parameter')}, {count(len(self.tables), 'table')}>"
        )


#: nilearn's name for a report (``nilearn.reporting.HTMLReport``): what ``generate_report`` returns.
HTMLReport = Report


def _frame_size(name: str, value, default: int) -> int:
    """An inline frame's size as an int; a value that is not one: ``default``, with nilearn's warning."""
    try:
        return int(value)
    except (TypeError, ValueError):
        _warnings.warn(f"Invalid {name} {value=}. Using default instead {default}", UserWarning,
                       stacklevel=3)
        return default
