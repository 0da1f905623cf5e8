"""Resampling images to another grid (scipy ``affine_transform`` per volume, blockwise over time).

The arithmetic is nilearn's ``resample_img``: the target grid (a 3x3 affine gets the offset and
shape of the bounding box of the data), the transform ``inv(affine) @ target_affine`` applied by
:func:`scipy.ndimage.affine_transform` to each volume, non-finite values extrapolated before
interpolation and put back after, and the optional clipping to the data's range.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import xarray as xr
from scipy import ndimage

from lazymask.exceptions import ImageMismatchError, ParameterError
from lazymask.image._inputs import as_image
from lazymask.io import get_affine, image_dataarray

INTERPOLATION_ORDERS = {"continuous": 3, "linear": 1, "nearest": 0}


class AffineShapeError(ParameterError, np.linalg.LinAlgError):
    """A ``target_affine`` that is not a 3x3 or 4x4 matrix (a ``LinAlgError`` too, as nilearn raises)."""


# -- planning: pure functions of affines and shapes ------------------------------------------------
def check_resample_inputs(target_affine, target_shape, interpolation) -> None:
    """Raise :class:`ParameterError` for arguments ``resample_img`` cannot use."""
    if interpolation not in INTERPOLATION_ORDERS:
        raise ParameterError(
            f"interpolation={interpolation!r}: expected one of {sorted(INTERPOLATION_ORDERS)}."
        )
    if target_shape is not None:
        if len(target_shape) != 3:
            raise ParameterError(
                f"target_shape={tuple(target_shape)!r}: expected the 3 sizes of the spatial grid."
            )
        if target_affine is None:
            raise ParameterError(
                f"target_shape={tuple(target_shape)!r} was given without target_affine; pass the "
                "4x4 target_affine of that grid too (a shape alone does not place a grid in space)."
            )
        if np.shape(target_affine) == (3, 3):
            raise ParameterError(
                "target_shape was given with a 3x3 target_affine, which has no origin; pass a 4x4 "
                "target_affine (or drop target_shape to get the bounding box of the data)."
            )
    if target_affine is not None and np.shape(target_affine) not in ((3, 3), (4, 4)):
        raise AffineShapeError(
            f"target_affine has shape {np.shape(target_affine)}; expected a 3x3 or 4x4 matrix."
        )


def _bounds(shape, affine) -> np.ndarray:
    """(3, 2) min/max of the corners of a grid of ``shape`` mapped by ``affine``."""
    corners = np.array(np.meshgrid(*[[0.0, n - 1] for n in shape], indexing="ij")).reshape(3, -1)
    mapped = affine[:3, :3] @ corners + affine[:3, 3:4]
    return np.stack([mapped.min(axis=1), mapped.max(axis=1)], axis=1)


def plan_target_grid(source_shape, source_affine, target_affine, target_shape):
    """The 4x4 target affine and the 3D target shape (nilearn's rules for 3x3 affines / no shape)."""
    target_affine = np.array(target_affine, dtype=np.float64)
    if target_affine.shape == (3, 3):
        full = np.eye(4)
        full[:3, :3] = target_affine
        bounds = _bounds(source_shape, np.linalg.inv(full) @ source_affine)
        full[:3, 3] = target_affine @ bounds[:, 0]
        bounds = bounds - bounds[:, :1]
        target_affine = full
    else:
        bounds = _bounds(source_shape, np.linalg.inv(target_affine) @ source_affine)
    if target_shape is None:
        target_shape = tuple(int(np.ceil(high)) + 1 for high in bounds[:, 1])
    if np.any(bounds[:, 1] < 0):
        raise ParameterError(
            "the field of view of target_affine contains none of the image's data; check "
            "target_affine (its origin and axes) against the image's affine."
        )
    return target_affine, tuple(int(n) for n in target_shape)


def resampling_needed(source_shape, source_affine, target_affine, target_shape) -> bool:
    return not (
        tuple(target_shape) == tuple(source_shape[:3]) and np.allclose(target_affine, source_affine)
    )


def voxel_transform(source_affine, target_affine):
    """Matrix (or its diagonal when diagonal) and offset mapping target voxels to source voxels."""
    if np.all(target_affine == source_affine):
        transform = np.eye(4)
    else:
        transform = np.linalg.inv(source_affine) @ target_affine
    matrix, offset = transform[:3, :3], transform[:3, 3]
    if np.all(np.diag(np.diag(matrix)) == matrix):
        matrix = np.diag(matrix)
    return matrix, offset


def resampled_dtype(dtype, interpolation: str) -> np.dtype:
    """Integers become floats of the same size with continuous interpolation (int8 -> float32)."""
    dtype = np.dtype(dtype)
    if interpolation == "continuous" and dtype.kind == "i":
        return np.dtype(np.float32) if dtype.itemsize <= 4 else np.dtype(np.float64)
    return dtype.newbyteorder("=")


# -- executing: numpy, one volume at a time ----------------------------------------------------------
def _extrapolate_into_holes(volume: np.ndarray, finite: np.ndarray, iterations: int = 2) -> np.ndarray:
    """Fill non-finite voxels next to finite ones with the mean of their finite face neighbours.

    Two shells, like nilearn does before interpolating data with NaNs; farther voxels become 0.
    """
    data = np.where(finite, volume, np.nan).astype(np.float64)
    known = finite.copy()
    for _ in range(iterations):
        grown = ndimage.binary_dilation(known)
        padded = np.pad(data, 1, constant_values=np.nan)
        shell = grown & ~known
        total = np.zeros(data.shape)
        count = np.zeros(data.shape)
        for axis in range(3):
            for step in (-1, 1):
                neighbour = np.roll(padded, step, axis=axis)[1:-1, 1:-1, 1:-1]
                ok = np.isfinite(neighbour)
                total += np.where(ok, neighbour, 0.0)
                count += ok
        with np.errstate(invalid="ignore", divide="ignore"):
            data = np.where(shell, total / count, data)
        known = grown
    data[~known] = 0.0
    data[~np.isfinite(data)] = 0.0
    return data


def resample_volume(volume, matrix, offset, target_shape, order, fill_value, out_dtype) -> np.ndarray:
    """Resample one 3D numpy volume (non-finite values handled as nilearn does)."""
    out = np.zeros(target_shape, dtype=out_dtype, order="F")
    finite = np.isfinite(volume) if volume.dtype.kind == "f" else None
    has_holes = finite is not None and not finite.all()
    source = _extrapolate_into_holes(volume, finite) if has_holes else volume
    ndimage.affine_transform(
        source, matrix, offset=offset, output_shape=target_shape, output=out, cval=fill_value, order=order
    )
    if has_holes:
        holes = ndimage.affine_transform(~finite, matrix, offset=offset, output_shape=target_shape, order=0)
        out[holes] = np.nan
    return out


def resample_block(block, matrix, offset, target_shape, order, fill_value, out_dtype, clip_range=None):
    """Resample every volume of a 3D or 4D block; optionally clip to ``clip_range`` (lo, hi)."""
    if block.ndim == 3:
        out = resample_volume(block, matrix, offset, target_shape, order, fill_value, out_dtype)
    else:
        out = np.zeros((*target_shape, block.shape[3]), dtype=out_dtype, order="F")
        for t in range(block.shape[3]):
            out[..., t] = resample_volume(block[..., t], matrix, offset, target_shape, order, fill_value, out_dtype)
    if clip_range is not None:
        low, high = (out.dtype.type(value) for value in clip_range)
        np.clip(out, low, high, out=out)
    return out


# -- the public functions ----------------------------------------------------------------------------
def resample_img(
    img,
    target_affine=None,
    target_shape=None,
    interpolation="continuous",
    copy=True,
    order="F",
    clip=True,
    fill_value=0.0,
    force_resample=True,
    copy_header=True,
) -> xr.DataArray:
    """Resample an image onto a target grid, lazily, volume by volume.

    Same parameters, defaults and numbers as :func:`nilearn.image.resample_img`. 4D images are
    resampled blockwise over their time chunks. With ``clip=True`` (the default) the output is
    clipped to ``[min(data min, 0), max(data max, 0)]``: for a 4D image that range is a lazy
    reduction over the whole image, so computing the result reads the data twice (pass
    ``clip=False`` to read it once).

    Parameters
    ----------
    img : image
        Anything :func:`lazymask.io.open_nifti` accepts (3D or 4D).
    target_affine : array-like (3, 3) or (4, 4), optional
        The target voxel-to-world affine; a 3x3 matrix keeps the data's bounding box.
    target_shape : tuple of 3 int, optional
        The target spatial shape (needs a 4x4 ``target_affine``).
    interpolation : {"continuous", "linear", "nearest"}, default="continuous"
        Spline order 3, 1 or 0.
    copy : bool, default=True
        Accepted for compatibility (results are always new arrays).
    order : {"F", "C"}, default="F"
        Accepted for compatibility (chunks are Fortran-ordered).
    clip : bool, default=True
        Clip to the input's range (extended to 0), removing spline ringing.
    fill_value : float, default=0.0
        Value outside the input's field of view.
    force_resample : bool, default=True
        Accepted for compatibility: the transform is always applied (exact for integer shifts).
    copy_header : bool, default=True
        Accepted for compatibility.

    Returns
    -------
    xarray.DataArray
        Lazy image on the target grid, with ``attrs["affine"]`` the target affine.

    Examples
    --------
    >>> import numpy as np
    >>> img2mm = resample_img("bold.nii.gz", target_affine=np.diag([2, 2, 2]))  # doctest: +SKIP
    """
    check_resample_inputs(target_affine, target_shape, interpolation)
    image = as_image(img, "img")
    if target_affine is None:
        return image
    source_affine = get_affine(image)
    source_shape = image.shape[:3]
    target_affine, target_shape = plan_target_grid(source_shape, source_affine, target_affine, target_shape)
    if not resampling_needed(source_shape, source_affine, target_affine, target_shape):
        return image
    data = image.data if isinstance(image.data, da.Array) else da.from_array(image.data)
    out_dtype = resampled_dtype(data.dtype, interpolation)
    matrix, offset = voxel_transform(source_affine, target_affine)
    resampled = _map_resample(data, matrix, offset, target_shape, INTERPOLATION_ORDERS[interpolation],
                              fill_value, out_dtype, clip)
    t_r = image.attrs.get("t_r")
    attrs = {k: v for k, v in image.attrs.items() if k not in ("affine", "t_r")}
    return image_dataarray(resampled, target_affine, t_r=t_r, name=image.name, attrs=attrs)


def _lazy_range(data: da.Array) -> tuple[da.Array, da.Array]:
    """Lazy ``min(nanmin, 0)`` and ``max(nanmax, 0)`` of a dask array, as float64 scalars."""
    low = da.minimum(da.nanmin(data).astype(np.float64), 0.0)
    high = da.maximum(da.nanmax(data).astype(np.float64), 0.0)
    return low, high


def _resample_chunk(block, low=None, high=None, *, matrix, offset, target_shape, order, fill_value, out_dtype):
    clip_range = None if low is None else (low, high)
    return resample_block(block, matrix, offset, target_shape, order, fill_value, out_dtype, clip_range)


def _map_resample(data, matrix, offset, target_shape, order, fill_value, out_dtype, clip):
    """Resample each time chunk (whole volumes) of a 3D/4D dask array onto ``target_shape``."""
    data = data.rechunk({0: -1, 1: -1, 2: -1})
    chunks = tuple((n,) for n in target_shape) + data.chunks[3:]
    clip_args = _lazy_range(data) if clip else ()
    return da.map_blocks(
        _resample_chunk,
        data,
        *clip_args,
        matrix=matrix,
        offset=offset,
        target_shape=target_shape,
        order=order,
        fill_value=fill_value,
        out_dtype=out_dtype,
        chunks=chunks,
        dtype=out_dtype,
        meta=np.empty((0,) * data.ndim, dtype=out_dtype),
    )


def resample_to_img(
    source_img,
    target_img,
    interpolation="continuous",
    copy=True,
    order="F",
    clip=False,
    fill_value=0.0,
    force_resample=True,
    copy_header=True,
) -> xr.DataArray:
    """Resample ``source_img`` onto the grid (affine and spatial shape) of ``target_img``, lazily.

    Same parameters and defaults as :func:`nilearn.image.resample_to_img` (note ``clip=False``).
    Only the target's header is used: its voxels are never read.

    Parameters
    ----------
    source_img : image
        The 3D or 4D image to resample (anything :func:`lazymask.io.open_nifti` accepts).
    target_img : image
        The image whose grid (affine and spatial shape) the result takes.
    interpolation, copy, order, clip, fill_value, force_resample, copy_header
        As in :func:`resample_img`.

    Returns
    -------
    xarray.DataArray
        The lazily resampled image on the target's grid.

    Examples
    --------
    >>> atlas_on_bold = resample_to_img("atlas.nii.gz", "bold.nii.gz", interpolation="nearest")  # doctest: +SKIP
    """
    target = as_image(target_img, "target_img")
    return resample_img(
        source_img,
        target_affine=get_affine(target),
        target_shape=target.shape[:3],
        interpolation=interpolation,
        copy=copy,
        order=order,
        clip=clip,
        fill_value=fill_value,
        force_resample=force_resample,
        copy_header=copy_header,
    )


def check_same_grid(images: list[xr.DataArray], name: str) -> None:
    """Raise :class:`ImageMismatchError` unless all ``images`` share spatial shape and affine."""
    first = images[0]
    for index, image in enumerate(images[1:], start=1):
        if image.shape[:3] != first.shape[:3] or not np.allclose(get_affine(image), get_affine(first)):
            raise ImageMismatchError(
                f"Field of view of image #{index} is different from reference FOV. "
                f"{name}[{index}] has spatial shape {image.shape[:3]} and affine "
                f"{np.round(get_affine(image), 4).tolist()} but {name}[0] has {first.shape[:3]} and "
                f"{np.round(get_affine(first), 4).tolist()}; resample them to one grid first "
                "(lazymask.image.resample_to_img) or pass target_affine/target_shape."
            )


def resample_array(volume: np.ndarray, affine, target_affine=None, target_shape=None,
                   interpolation="continuous", clip=True, fill_value=0.0):
    """Resample an in-memory 3D numpy volume; returns ``(array, affine)`` (eager twin of resample_img).

    Used on small volumes (a mean, a template) once they are computed.
    """
    check_resample_inputs(target_affine, target_shape, interpolation)
    affine = np.asarray(affine, dtype=np.float64)
    if target_affine is None:
        return volume, affine
    target_affine, target_shape = plan_target_grid(volume.shape, affine, target_affine, target_shape)
    if not resampling_needed(volume.shape, affine, target_affine, target_shape):
        return volume, affine
    matrix, offset = voxel_transform(affine, target_affine)
    clip_range = (min(np.nanmin(volume), 0), max(np.nanmax(volume), 0)) if clip else None
    out = resample_block(volume, matrix, offset, target_shape, INTERPOLATION_ORDERS[interpolation],
                         fill_value, resampled_dtype(volume.dtype, interpolation), clip_range)
    return out, target_affine
