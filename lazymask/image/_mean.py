"""The mean over time of an image, as a lazy dask reduction (one pass over the data)."""

from __future__ import annotations

import contextlib
import contextvars

import dask
import dask.array as da
import numpy as np
import xarray as xr

from lazymask.image._inputs import as_image, float_dtype_of, is_image_list
from lazymask.io import get_affine, image_dataarray


def _accumulate(total, block: np.ndarray, dtype) -> np.ndarray:
    """Add the volumes of a Fortran-ordered ``(i, j, k, t)`` block to ``total``, one at a time.

    Adding volume after volume, in order, in the dtype of numpy's mean, gives numpy's rounding
    exactly (``np.mean`` over the last axis of a Fortran-ordered array sums sequentially), and
    keeps the temporaries to one volume.
    """
    total = np.zeros(block.shape[:3], dtype=dtype, order="F") if total is None else total.copy(order="K")
    for t in range(block.shape[3]):
        total += block[..., t]
    return total


def _divide(total: np.ndarray, n_volumes: int, dtype) -> np.ndarray:
    # numpy divides the sum by an intp count: in float64, then casts to the sum's dtype
    return np.true_divide(total, np.intp(n_volumes)).astype(dtype, copy=False)


def lazy_time_mean(data: da.Array) -> da.Array:
    """Mean over the last axis of a 4D dask array, with ``numpy.mean``'s dtype and rounding.

    The chunks are summed in time order (a chain of small tasks, one per chunk), so the result
    does not depend on the chunking and equals ``np.mean(array, axis=-1)`` bit for bit. Reading
    the chunks stays parallel; only the additions are ordered.
    """
    dtype = float_dtype_of(data.dtype)
    data = data.rechunk({0: -1, 1: -1, 2: -1})
    total = None
    for block in data.to_delayed(optimize_graph=False).ravel():
        total = dask.delayed(_accumulate, pure=True)(total, block, dtype)
    mean = dask.delayed(_divide, pure=True)(total, data.shape[3], dtype)
    return da.from_delayed(mean, shape=data.shape[:3], dtype=dtype, meta=np.empty((0, 0, 0), dtype=dtype))


_KNOWN_MEANS: contextvars.ContextVar[dict] = contextvars.ContextVar("lazymask_known_means", default={})


@contextlib.contextmanager
def known_time_means(pairs):
    """Within the block, :func:`time_mean_volume` of these images gives the means already at hand.

    ``pairs`` holds ``(image, mean)`` with ``mean`` the (persisted) result of
    ``time_mean_volume(image)`` computed in the pass that decoded the image; pairs whose mean is
    None are ignored. An image is recognised by its dask array's name (dask's names follow the
    graph, so an image with other data or chunks is never mistaken for it).

    Examples
    --------
    >>> import dask.array as da, xarray as xr
    >>> run = xr.DataArray(da.ones((2, 2, 2, 4), chunks=2), dims=("i", "j", "k", "time"))
    >>> done = time_mean_volume(run).persist()
    >>> with known_time_means([(run, done)]):
    ...     time_mean_volume(run) is done
    True
    """
    known = dict(_KNOWN_MEANS.get())
    for image, mean in pairs:
        if mean is not None and isinstance(image.data, da.Array):
            known[image.data.name] = mean
    token = _KNOWN_MEANS.set(known)
    try:
        yield
    finally:
        _KNOWN_MEANS.reset(token)


def time_mean_volume(image: xr.DataArray) -> da.Array:
    """The lazy 3D mean of a 4D image (a 3D image is returned as it is, as a dask array)."""
    data = image.data if isinstance(image.data, da.Array) else da.from_array(image.data)
    if image.ndim == 3:
        return data
    known = _KNOWN_MEANS.get().get(data.name)
    return known if known is not None else lazy_time_mean(data)


def mean_img(imgs, target_affine=None, target_shape=None, verbose=0, n_jobs=1, copy_header=True):
    """Mean over time of an image, or of several images, as a lazy 3D DataArray.

    Same parameters as :func:`nilearn.image.mean_img`. The mean is a dask reduction over time
    chunks: computing it reads the data once. For a list of runs, each run is averaged and the
    runs' means are averaged (each run weighs the same, whatever its length), as nilearn does.

    Parameters
    ----------
    imgs : image or list of images
        Anything :func:`lazymask.io.open_nifti` accepts, or a list of such images.
    target_affine : array-like (3, 3) or (4, 4), optional
        Resample the mean to this affine (see :func:`resample_img`).
    target_shape : tuple of 3 int, optional
        Resample the mean to this shape (needs ``target_affine``).
    verbose : int, default=0
        Accepted for compatibility; unused.
    n_jobs : int, default=1
        Accepted for compatibility: parallelism comes from the dask scheduler.
    copy_header : bool, default=True
        Accepted for compatibility (DataArrays carry the affine only).

    Returns
    -------
    xarray.DataArray
        Lazy 3D mean, dims ``("i", "j", "k")``, with the (target) affine.

    Examples
    --------
    >>> mean = mean_img("bold.nii.gz")   # doctest: +SKIP
    >>> mean.compute()                   # one pass over the file  # doctest: +SKIP
    """
    from lazymask.image._resample import resample_img

    images = [as_image(i, "imgs") for i in imgs] if is_image_list(imgs) else [as_image(imgs, "imgs")]
    first = images[0]
    means = [image_dataarray(time_mean_volume(img), get_affine(img)) for img in images]
    if target_affine is not None or target_shape is not None:
        means = [resample_img(m, target_affine=target_affine, target_shape=target_shape) for m in means]
    elif len(means) > 1:
        from lazymask.image._resample import check_same_grid

        check_same_grid(means, "imgs")
    total = means[0].data.astype(float_dtype_of(means[0].dtype))
    for mean in means[1:]:
        total = total + mean.data
    average = total / len(means) if len(means) > 1 else total
    attrs = {"source": first.attrs["source"]} if "source" in first.attrs else None
    return image_dataarray(average, get_affine(means[0]), attrs=attrs)
