"""The metadata schema of lazymask's zarr groups: names, kinds, and metadata parsed as data.

Contract
--------
* A lazymask group's ``zarr.json`` attributes hold ``lazymask`` (what the group holds: ``kind``,
  ``format_version``, dims, dtype, name, attrs, coords), ``lazymask_manifest`` and
  ``lazymask_complete`` (written last); a store lazymask created has ``lazymask_root`` at its root.
* Everything read from a store is validated here as data (types, dims, dtypes) before it is used:
  a malformed value is a :class:`~lazymask.exceptions.CorruptStoreError` naming the store and the key.
* Group names are relative paths without ``.``/``..`` parts or hidden names
  (:func:`normalise_group`), so nothing is written or read outside the store.
"""

from __future__ import annotations

import json

import numpy as np
import xarray as xr
from zarr.codecs import BloscCodec

from lazymask import config
from lazymask.exceptions import CorruptImageError, CorruptStoreError, NotNiftiError, ParameterError
from lazymask.io._integrity import MANIFEST_ATTR, checksum_codec, read_metadata_document
from lazymask.io._meta import IMAGE_DIMS_3D, IMAGE_DIMS_4D
from lazymask.storage import CLAIM_ATTR

__all__ = ["COMPLETE_ATTR", "META_ATTR", "ROOT_ATTR", "FORMAT_VERSION", "KIND_NAMES", "CHUNK_BYTES",
           "normalise_group", "default_compressor", "describe"]

CHUNK_BYTES = config.get("zarr_chunk_bytes")
"""Default target size of one stored chunk (uncompressed); set it with ``config.set(zarr_chunk_bytes=...)``."""

COMPLETE_ATTR = "lazymask_complete"
META_ATTR = "lazymask"
ROOT_ATTR = "lazymask_root"
FORMAT_VERSION = 2
IMAGE_ARRAY = "0"
HEADER_ARRAY = "nifti"
DATA_ARRAY = "data"
#: what each lazymask writer's groups are called, by the ``kind`` recorded in their metadata
KIND_NAMES = {"image": "lazymask zarr DataArray store (to_zarr)", "array": "lazymask zarr DataArray store (to_zarr)",
              "signals": "lazymask signals group (save_signals)"}
_FAMILY = {"image": "dataarray", "array": "dataarray", "signals": "signals"}
#: the attributes of a claim (a group whose write started): nothing else
CLAIM_ATTRS = frozenset({COMPLETE_ATTR, META_ATTR, CLAIM_ATTR})


def default_compressor() -> BloscCodec:
    """Blosc zstd level 1 with byte shuffle: the codec lazymask stores chunks with.

    Examples
    --------
    >>> default_compressor().cname.value
    'zstd'
    """
    return BloscCodec(cname="zstd", clevel=1, shuffle="shuffle")


def _codecs(compressor) -> list:
    return [compressor, checksum_codec()] if compressor is not None else [checksum_codec()]


def _join(*parts: str) -> str:
    return "/".join(p for p in parts if p)


def normalise_group(group) -> str:
    """``group`` as a clean relative path ("" for the root); rejects ``.``/``..`` escapes.

    Examples
    --------
    >>> normalise_group("/sub-01//run-1/")
    'sub-01/run-1'
    """
    if group is None:
        return ""
    if not isinstance(group, str):
        raise ParameterError(f"group={group!r}: expected a str such as 'sub-01/run-1', or None.")
    parts = [p for p in group.strip("/").split("/") if p]
    if any(p in (".", "..") or p.startswith(".") for p in parts):
        raise ParameterError(f"group={group!r}: group names may not be '.', '..' or start with '.'.")
    return "/".join(parts)


def describe(location, group: str) -> str:
    """How messages name a group of a store (never its storage options).

    Examples
    --------
    >>> from lazymask.storage import resolve
    >>> describe(resolve("s3://bucket/out.zarr"), "sub-01")
    "zarr store 's3://bucket/out.zarr', group 'sub-01'"
    """
    return f"zarr store {location.describe()!r}" + (f", group {group!r}" if group else "")


def _attributes(document: dict | None, where: str) -> dict:
    if document is None:
        return {}
    attrs = document.get("attributes", {})
    if not isinstance(attrs, dict):
        raise CorruptStoreError(f"{where}: 'attributes' in zarr.json is a {type(attrs).__name__}, not an object.")
    return attrs


def _node_document(store, group: str, where: str) -> dict | None:
    """The node's zarr.json, parsed as data (None when there is none)."""
    return read_metadata_document(store, group, where)


def _is_nifti_zarr(attrs: dict) -> bool:
    ome = attrs.get("ome", attrs)
    return isinstance(ome, dict) and isinstance(ome.get("multiscales"), list) and bool(ome["multiscales"])


# -- metadata (JSON, parsed as data) ----------------------------------------------------------------
def _validated_meta(attrs: dict, where: str) -> dict:
    """The group's lazymask metadata, after checking it is complete and well-formed (as data)."""
    meta = attrs.get(META_ATTR)
    if not isinstance(meta, dict):
        if COMPLETE_ATTR in attrs:
            raise CorruptImageError(f"{where}: a lazymask write that did not finish; write it again.")
        if META_ATTR in attrs:
            raise CorruptStoreError(
                f"{where}: attribute {META_ATTR!r} is a {type(meta).__name__}, not an object; the store's "
                "metadata was altered."
            )
        raise NotNiftiError(
            f"{where}: not written by lazymask.to_zarr (no {META_ATTR!r} attribute). lazymask opens "
            "the zarr stores it wrote and NIfTI-Zarr images; open NIfTI files with lazymask.open_nifti."
        )
    kind = meta.get("kind")
    if kind not in _FAMILY:
        raise NotNiftiError(f"{where}: attribute '{META_ATTR}.kind' is {kind!r}; not a store this lazymask reads.")
    if attrs.get(COMPLETE_ATTR) is not True:
        raise CorruptImageError(
            f"{where}: this group is not complete: its write did not finish (no '{COMPLETE_ATTR}: true'), "
            "so its data may be partial. Write it again (to_zarr replaces an unfinished group)."
        )
    if meta.get("format_version", FORMAT_VERSION if kind == "signals" else None) != FORMAT_VERSION:
        raise NotNiftiError(
            f"{where}: lazymask store format {meta.get('format_version')!r}, but this lazymask reads "
            f"format {FORMAT_VERSION}. Write the store again with this lazymask."
        )
    if kind in ("image", "array"):
        _check_dataarray_meta(meta, where)
    return meta


def _expect(value, types, where: str, key: str, expected: str):
    if not isinstance(value, types) or isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise CorruptStoreError(
            f"{where}: attribute {key!r} is {_shown_type(value)}, expected {expected}; the store's metadata "
            "was altered or was not written by lazymask."
        )
    return value


def _shown_type(value) -> str:
    return "null" if value is None else f"a {type(value).__name__}"


def _stored_dtype(text, where: str, key: str) -> np.dtype:
    _expect(text, str, where, key, "a dtype string such as '<f4'")
    try:
        dtype = np.dtype(text)
    except (TypeError, ValueError):
        raise CorruptStoreError(f"{where}: attribute {key!r} = {text[:40]!r} is not a dtype.") from None
    if dtype.kind not in "biufcUSMm":
        raise CorruptStoreError(f"{where}: attribute {key!r} = {text[:40]!r} is not a dtype lazymask stores.")
    return dtype


def _check_dataarray_meta(meta: dict, where: str) -> None:
    key = META_ATTR
    dims = _expect(meta.get("dims"), list, where, f"{key}.dims", "a list of dimension names")
    if not all(isinstance(d, str) for d in dims) or len(set(dims)) != len(dims) or len(dims) > 32:
        raise CorruptStoreError(f"{where}: attribute '{key}.dims' must be distinct strings, found {dims[:8]!r}.")
    _stored_dtype(meta.get("dtype"), where, f"{key}.dtype")
    _expect(meta.get("name"), (str, type(None)), where, f"{key}.name", "a string or null")
    _expect(meta.get("attrs"), dict, where, f"{key}.attrs", "an object")
    coords = _expect(meta.get("coords"), dict, where, f"{key}.coords", "an object of coordinates")
    for name, info in coords.items():
        ckey = f"{key}.coords.{name}"
        _expect(info, dict, where, ckey, "an object")
        cdims = _expect(info.get("dims"), list, where, f"{ckey}.dims", "a list of dimension names")
        if not all(isinstance(d, str) and d in dims for d in cdims):
            raise CorruptStoreError(f"{where}: attribute '{ckey}.dims' = {cdims!r} names dims the array has not ({dims}).")
        _stored_dtype(info.get("dtype"), where, f"{ckey}.dtype")
        _expect(info.get("attrs", {}), dict, where, f"{ckey}.attrs", "an object")
        if "values" in info:
            _expect(info["values"], list, where, f"{ckey}.values", "a list")
    if meta["kind"] == "image" and tuple(dims) not in (IMAGE_DIMS_3D, IMAGE_DIMS_4D):
        raise CorruptStoreError(f"{where}: attribute '{key}.dims' = {dims!r} is not an image's dims.")


def _metadata(obj: xr.DataArray, kind: str) -> dict:
    coords = {
        name: {
            "dims": list(coord.dims),
            "dtype": coord.dtype.str,
            "attrs": _json_attrs(coord.attrs, f"coordinate {name!r}"),
            # image coords (time) are small: kept here; other arrays store coords as zarr arrays
            **({"values": _json_value(coord.values.tolist(), name)} if kind == "image" else {}),
        }
        for name, coord in obj.coords.items()
    }
    for name, coord in obj.coords.items():
        if coord.dtype.kind not in ("biufU" if kind == "image" else "biufcUSMm"):
            raise ParameterError(
                f"coordinate {name!r} has dtype {coord.dtype}; coordinates must be numbers "
                "or strings to be stored. Convert it (for time, seconds as float)."
            )
    return {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "name": obj.name if obj.name is None or isinstance(obj.name, str) else str(obj.name),
        "dims": list(obj.dims),
        "dtype": obj.dtype.str,
        "attrs": _json_attrs(obj.attrs, "attribute"),
        "coords": coords,
    }


def _json_attrs(attrs: dict, what: str) -> dict:
    return {str(key): _json_value(value, f"{what} {key!r}") for key, value in attrs.items()}


def _json_value(value, what: str):
    """``value`` with numpy scalars/arrays turned into Python ones; raise if it is not JSON data."""
    def convert(item):
        if isinstance(item, np.ndarray | np.generic):
            return item.tolist()
        raise TypeError(type(item).__name__)

    try:
        return json.loads(json.dumps(value, default=convert))
    except (TypeError, ValueError, RecursionError) as exc:
        raise ParameterError(
            f"{what} cannot be stored in zarr: {exc} is not JSON data (numbers, strings, lists, "
            "dicts). Convert it, or drop it before writing (obj.attrs.pop(...))."
        ) from None


def _restore_labels(data: xr.DataArray, meta: dict, where: str) -> xr.DataArray:
    if meta["kind"] == "image":
        coords = {}
        for name, info in meta["coords"].items():
            if "values" not in info:
                raise CorruptStoreError(f"{where}: attribute '{META_ATTR}.coords.{name}.values' is missing.")
            try:
                values = np.asarray(info["values"], dtype=np.dtype(info["dtype"]))
            except (TypeError, ValueError):
                raise CorruptStoreError(
                    f"{where}: attribute '{META_ATTR}.coords.{name}.values' does not hold {info['dtype']} values."
                ) from None
            expected = tuple(data.sizes[d] for d in info["dims"])
            if values.shape != expected:
                raise CorruptStoreError(
                    f"{where}: coordinate {name!r} has shape {values.shape} but the image's {tuple(info['dims'])} "
                    f"is {expected}; the metadata was altered."
                )
            coords[name] = xr.Variable(tuple(info["dims"]), values, attrs=dict(info.get("attrs", {})))
        data = data.assign_coords(coords)
    data.attrs = dict(meta["attrs"])
    data.name = meta["name"]
    return data

