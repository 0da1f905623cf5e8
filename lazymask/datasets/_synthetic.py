"""A synthetic brain and a synthetic EPI run on it, deterministic to the bit.

Everything here is a pure function of its arguments (and of a seed): the same call gives the same
arrays, so the files written from them have the same bytes every time.

The model, in world millimetres (an MNI-like frame, origin near the anterior commissure):

* **Anatomy** — a cerebrum (an ellipsoid with folded cortex: a grey-matter ribbon whose inner
  boundary undulates, sulci filled with CSF, an interhemispheric fissure), lateral ventricles,
  thalami and putamina (grey), a brainstem (white) and a cerebellum (grey with a white core), in a
  thin shell of CSF. Tissue fractions are computed on a grid twice as fine and averaged, so the
  boundaries have partial-volume voxels like a real acquisition.
* **Baseline EPI contrast** — T2*-weighted: CSF brighter than grey matter, grey brighter than white;
  a smooth receive-coil bias field, signal dropout near the sinuses and the ear canals, and a faint
  Nyquist (N/2) ghost along the phase-encoding axis.
* **Time series** — slow scanner drift, low-frequency global fluctuations, cardiac/respiratory-like
  oscillations strongest in CSF, temporally autocorrelated physiological noise, a block-design
  activation (haemodynamic response convolved) in the visual cortex, the first-order intensity
  changes of head motion (the image gradient dotted with the displacement), and thermal noise added
  in quadrature, so the background is Rayleigh-distributed as in magnitude images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, special

# Tissue classes of the anatomical model.
BACKGROUND, CSF, GREY, WHITE = 0, 1, 2, 3

# Baseline T2*-weighted intensities (arbitrary scanner units) per tissue.
_TISSUE_INTENSITY = {CSF: 1250.0, GREY: 830.0, WHITE: 600.0}

MOTION_COLUMNS = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")


@dataclass(frozen=True)
class Grid:
    """A voxel grid: its shape and its voxel-to-world affine (axes aligned, RAS+)."""

    shape: tuple[int, int, int]
    voxel_size: float
    origin: tuple[float, float, float]

    @property
    def affine(self) -> np.ndarray:
        affine = np.diag([self.voxel_size] * 3 + [1.0])
        affine[:3, 3] = self.origin
        return affine

    def world_axes(self, oversample: int = 1) -> list[np.ndarray]:
        """World coordinates (mm) of the voxel centres along each axis, optionally oversampled."""
        step = self.voxel_size / oversample
        offsets = (np.arange(oversample) - (oversample - 1) / 2.0) * step
        centres = [start + self.voxel_size * np.arange(n) for start, n in zip(self.origin, self.shape, strict=True)]
        return [(c[:, None] + offsets[None, :]).ravel() for c in centres]


def demo_grid() -> Grid:
    """The demo run's grid: 64 x 64 x 40 voxels of 3 mm, covering the whole brain."""
    shape = (64, 64, 40)
    voxel = 3.0
    origin = (-voxel * (shape[0] - 1) / 2.0, -112.5, -58.5)
    return Grid(shape=shape, voxel_size=voxel, origin=origin)


# -- anatomy ---------------------------------------------------------------------------------------
def _ellipsoid_radius(x, y, z, centre, axes) -> np.ndarray:
    return np.sqrt(
        ((x - centre[0]) / axes[0]) ** 2 + ((y - centre[1]) / axes[1]) ** 2 + ((z - centre[2]) / axes[2]) ** 2
    )


_CEREBRUM_CENTRE, _CEREBRUM_AXES = (0.0, -17.0, 12.0), (68.0, 86.0, 56.0)


def tissue_labels(x, y, z) -> np.ndarray:
    """The tissue class (``BACKGROUND``, ``CSF``, ``GREY``, ``WHITE``) at world points (mm)."""
    radius = _ellipsoid_radius(x, y, z, _CEREBRUM_CENTRE, _CEREBRUM_AXES)
    folds = np.sin(x / 7.0 + 0.3) * np.sin(y / 8.0 + 1.1) * np.sin(z / 6.5 + 0.7)
    labels = np.full(radius.shape, BACKGROUND, dtype=np.int8)
    labels[radius < 1.06] = CSF  # subarachnoid space
    cerebrum = radius < 1.0
    labels[cerebrum] = GREY
    labels[cerebrum & (radius < 0.86 + 0.05 * folds)] = WHITE
    sulci = cerebrum & (radius > 0.93) & (folds > 0.55)
    fissure = cerebrum & (np.abs(x) < 1.5) & (z > 0.0)
    labels[sulci | fissure] = CSF
    for side in (-1.0, 1.0):
        ventricle = _ellipsoid_radius(x, y, z, (side * 9.0, -12.0, 17.0), (6.0, 26.0, 8.0)) < 1.0
        thalamus = _ellipsoid_radius(x, y, z, (side * 11.0, -19.0, 5.0), (8.0, 13.0, 8.0)) < 1.0
        putamen = _ellipsoid_radius(x, y, z, (side * 25.0, 2.0, 1.0), (6.0, 13.0, 9.0)) < 1.0
        labels[thalamus | putamen] = GREY
        labels[ventricle] = CSF
    brainstem = _ellipsoid_radius(x, y, z, (0.0, -27.0, -30.0), (11.0, 13.0, 26.0)) < 1.0
    cerebellum_r = _ellipsoid_radius(x, y, z, (0.0, -63.0, -33.0), (50.0, 29.0, 19.0))
    labels[(cerebellum_r < 1.06) & (labels == BACKGROUND)] = CSF
    labels[cerebellum_r < 1.0] = GREY
    labels[(cerebellum_r < 0.5) & (np.abs(x) > 8.0)] = WHITE
    labels[brainstem] = WHITE
    return labels


def tissue_fractions(grid: Grid, oversample: int = 2) -> dict[int, np.ndarray]:
    """Partial-volume fractions of CSF, grey and white matter in each voxel of ``grid``."""
    axes = grid.world_axes(oversample)
    x, y, z = np.meshgrid(*axes, indexing="ij", sparse=True)
    fine = tissue_labels(x, y, z)
    fractions = {}
    for tissue in (CSF, GREY, WHITE):
        blocks = (fine == tissue).reshape(
            grid.shape[0], oversample, grid.shape[1], oversample, grid.shape[2], oversample
        )
        fractions[tissue] = blocks.mean(axis=(1, 3, 5))
    return fractions


def world_coordinates(grid: Grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Broadcastable (sparse) world coordinates of the voxel centres of ``grid``."""
    return tuple(np.meshgrid(*grid.world_axes(), indexing="ij", sparse=True))


def baseline_image(grid: Grid, fractions: dict[int, np.ndarray]) -> np.ndarray:
    """The mean EPI image: tissue contrast, coil bias field, susceptibility dropout, N/2 ghost."""
    x, y, z = world_coordinates(grid)
    signal = sum(_TISSUE_INTENSITY[t] * fractions[t] for t in (CSF, GREY, WHITE))
    bias = 1.0 + 0.12 * (y + 17.0) / 90.0 - 0.10 * ((z - 10.0) / 70.0) ** 2 - 0.06 * (x / 70.0) ** 2
    dropout = 1.0 - 0.7 * np.exp(-(x**2 / 300.0 + (y - 35.0) ** 2 / 200.0 + (z + 18.0) ** 2 / 80.0))
    for side in (-1.0, 1.0):
        dropout = dropout * (
            1.0 - 0.5 * np.exp(-((x - side * 45.0) ** 2 / 150.0 + (y + 18.0) ** 2 / 150.0 + (z + 30.0) ** 2 / 60.0))
        )
    image = signal * bias * dropout
    ghost = 0.04 * np.roll(image, grid.shape[1] // 2, axis=1)
    return image + ghost


# -- time courses ----------------------------------------------------------------------------------
def hrf(t_r: float, length: float = 32.0) -> np.ndarray:
    """A canonical double-gamma haemodynamic response sampled every ``t_r`` seconds (peak 1)."""
    t = np.arange(0.0, length, t_r)
    peak = t**5 * np.exp(-t) / special.gamma(6)
    undershoot = t**15 * np.exp(-t) / special.gamma(16)
    response = peak - undershoot / 6.0
    return response / response.max()


def block_regressor(n_volumes: int, t_r: float, block_volumes: int) -> tuple[np.ndarray, np.ndarray]:
    """A rest/task block design: its boxcar and its HRF-convolved regressor (peak ~1)."""
    boxcar = ((np.arange(n_volumes) // block_volumes) % 2 == 1).astype(float)
    response = np.convolve(boxcar, hrf(t_r))[:n_volumes]
    return boxcar, response


def motion_parameters(n_volumes: int, rng: np.random.Generator) -> np.ndarray:
    """Head-motion time courses ``(n_volumes, 6)``: translations (mm) and rotations (radians).

    A slow drift (a smoothed random walk), small respiratory-like jitter, and two abrupt
    movements (a jerk and a return) as a subject's head does during a run.
    """
    walk = np.cumsum(rng.normal(0.0, 1.0, (n_volumes, 6)), axis=0)
    walk = ndimage.gaussian_filter1d(walk, sigma=4.0, axis=0)
    walk -= walk[0]
    scale = np.array([0.02, 0.04, 0.05, 0.0006, 0.0003, 0.0003])
    jitter = rng.normal(0.0, 1.0, (n_volumes, 6)) * scale * 0.6
    motion = walk * scale + jitter
    for start, length, jump in ((n_volumes * 3 // 10, 2, 0.9), (n_volumes * 3 // 4, 1, -0.6)):
        motion[start : start + length] += jump * np.array([0.3, 0.6, 1.0, 0.012, 0.004, 0.003])
    return motion


def framewise_displacement(motion: np.ndarray, head_radius: float = 50.0) -> np.ndarray:
    """Power et al.'s framewise displacement (mm); the first value is NaN (no previous volume)."""
    steps = np.abs(np.diff(motion, axis=0))
    displacement = steps[:, :3].sum(axis=1) + head_radius * steps[:, 3:].sum(axis=1)
    return np.concatenate([[np.nan], displacement])


def motion_sensitivity(grid: Grid, image: np.ndarray, centre=(0.0, -17.0, 12.0)) -> np.ndarray:
    """Maps ``(6, *shape)``: the first-order intensity change per unit of each motion parameter.

    Moving the head by a displacement field ``d`` changes a voxel's intensity by ``-grad(I) . d``;
    a translation moves every point by the same vector, a small rotation ``w`` by ``w x r``.
    """
    gx, gy, gz = np.gradient(image, grid.voxel_size)
    x, y, z = world_coordinates(grid)
    rx, ry, rz = x - centre[0], y - centre[1], z - centre[2]
    return np.stack(
        [-gx, -gy, -gz, gy * rz - gz * ry, gz * rx - gx * rz, gx * ry - gy * rx]
    ).astype(np.float32)


def _flat(array: np.ndarray, leading: int = 0) -> np.ndarray:
    """A spatial map (or ``leading`` stacked maps) with voxels flattened in Fortran (NIfTI) order."""
    if leading:
        return np.stack([_flat(one) for one in array])
    return array.ravel(order="F")


@dataclass
class SyntheticRun:
    """A generated run: int16 data ``(i, j, k, time)`` and everything known about it."""

    data: np.ndarray
    affine: np.ndarray
    t_r: float
    motion: np.ndarray
    fractions: dict[int, np.ndarray]
    boxcar: np.ndarray
    block_volumes: int
    activation_centres: tuple[tuple[float, float, float], ...]


def synthetic_run(grid: Grid, n_volumes: int = 150, t_r: float = 2.0, seed: int = 0) -> SyntheticRun:
    """Generate a realistic EPI run on ``grid`` (see the module docstring for the model).

    Parameters
    ----------
    grid : Grid
        The voxel grid.
    n_volumes : int
        Number of volumes.
    t_r : float
        Repetition time in seconds.
    seed : int
        Seed of every random draw; the result depends on nothing else.

    Returns
    -------
    SyntheticRun

    Examples
    --------
    >>> run = synthetic_run(demo_grid(), n_volumes=10)
    >>> run.data.shape, run.data.dtype
    ((64, 64, 40, 10), dtype('int16'))
    """
    rng = np.random.default_rng(seed)
    fractions = tissue_fractions(grid)
    image = baseline_image(grid, fractions)
    brain = fractions[GREY] + fractions[WHITE]
    time = np.arange(n_volumes) * t_r

    block_volumes = max(1, int(round(20.0 / t_r)))  # 20 s rest, 20 s task
    boxcar, response = block_regressor(n_volumes, t_r, block_volumes)
    x, y, z = world_coordinates(grid)
    centres = ((-14.0, -88.0, 4.0), (14.0, -88.0, 4.0))
    blob = sum(np.exp(-((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) / (2 * 11.0**2)) for c in centres)
    activation_map = 0.035 * blob * fractions[GREY]  # ~3.5 % signal change at the peak

    drift = 0.012 * time / max(time[-1], 1.0) - 0.006 * (time / max(time[-1], 1.0)) ** 2
    slow = ndimage.gaussian_filter1d(rng.normal(0.0, 1.0, n_volumes), sigma=6.0)
    global_fluct = 0.004 * slow / max(np.abs(slow).max(), 1e-12)
    pulsation = 0.015 * np.sin(2 * np.pi * 0.11 * time + rng.uniform(0, 2 * np.pi))
    motion = motion_parameters(n_volumes, rng)
    sensitivity = _flat(motion_sensitivity(grid, image), leading=6)

    # Arrays are (time, voxel) with voxels in Fortran order: the memory layout of a NIfTI run.
    grey, csf = _flat(fractions[GREY]), _flat(fractions[CSF])
    relative = (
        drift[:, None]
        + global_fluct[:, None] * (0.5 + grey)[None, :]
        + pulsation[:, None] * csf[None, :]
        + response[:, None] * _flat(activation_map)[None, :]
    ).astype(np.float32)
    flat_image = _flat(image).astype(np.float32)
    signal = flat_image * (1.0 + relative)
    signal += motion.astype(np.float32) @ sensitivity

    # Physiological noise: AR(1) in time, proportional to the signal, only in tissue.
    tissue = np.flatnonzero(_flat(brain) + csf > 0)
    physio = rng.standard_normal((n_volumes, tissue.size), dtype=np.float32)
    for t in range(1, n_volumes):
        physio[t] = 0.6 * physio[t - 1] + 0.8 * physio[t]
    signal[:, tissue] += 0.008 * flat_image[tissue] * physio

    # Thermal noise in quadrature (magnitude image): Rician in tissue, Rayleigh in the background.
    sigma = np.float32(18.0)
    signal += sigma * rng.standard_normal(signal.shape, dtype=np.float32)
    imaginary = rng.standard_normal(signal.shape, dtype=np.float32)
    imaginary *= sigma
    np.multiply(signal, signal, out=signal)
    np.multiply(imaginary, imaginary, out=imaginary)
    signal += imaginary
    np.sqrt(signal, out=signal)
    np.rint(signal, out=signal)
    np.minimum(signal, np.iinfo(np.int16).max, out=signal)
    data = signal.astype(np.int16)
    return SyntheticRun(
        data=data.reshape(n_volumes, *grid.shape[::-1]).transpose(3, 2, 1, 0),
        affine=grid.affine,
        t_r=t_r,
        motion=motion,
        fractions=fractions,
        boxcar=boxcar,
        block_volumes=block_volumes,
        activation_centres=centres,
    )


# -- a lazy run of any length, made chunk by chunk (no file) ------------------------------------------


@dataclass(frozen=True)
class LazyRun:
    """A lazy synthetic 4D run, its brain mask and repetition time (see :func:`lazy_synthetic_run`)."""

    func: object  # xarray.DataArray (i, j, k, time), dask-backed
    mask: object  # xarray.DataArray (i, j, k), int8
    t_r: float


def lazy_synthetic_run(shape=(91, 109, 91), n_volumes: int = 1200, chunks: int | None = None, seed: int = 0,
                       t_r: float = 2.0, dtype="float32") -> LazyRun:
    """A 4D run of any length that exists only as a dask graph: each time chunk is made on demand.

    The run is an ellipsoidal "brain" (intensity about 800, with a smooth spatial variation) on a
    dim background, with a slow oscillation, a linear drift and Gaussian noise. Every volume is a
    deterministic function of ``(shape, seed, volume index)``, so the values do not depend on
    ``chunks`` and a chunk costs its own generation only (a few ms per 2 mm volume): runs larger
    than memory (tens of GB) can be processed without a file. To keep generation cheap, each
    volume's noise is a window, at a random offset drawn per volume, of one pool of Gaussian
    values (drawn once per chunk from ``seed``): noise at a voxel is not independent across time,
    which does not matter for what this run is for (exercising the pipeline at scale).

    Parameters
    ----------
    shape : tuple of 3 int, default=(91, 109, 91)
        Spatial shape (the default is the 2 mm MNI grid).
    n_volumes : int, default=1200
        Number of volumes.
    chunks : int, optional
        Volumes per chunk; by default whole volumes adding up to ``lazymask.config``'s
        ``auto_chunk_bytes``.
    seed : int, default=0
        Seed of the noise.
    t_r : float, default=2.0
        Repetition time in seconds.
    dtype : numpy dtype, default="float32"

    Returns
    -------
    LazyRun
        ``func`` (a dask-backed ``(i, j, k, time)`` DataArray, Fortran-ordered chunks as NIfTI
        files give), ``mask`` (the ellipsoid, int8) and ``t_r``.

    Examples
    --------
    >>> run = lazy_synthetic_run(shape=(10, 12, 10), n_volumes=30, chunks=8)
    >>> run.func.shape, run.func.data.chunks[3], int(run.mask.sum())
    ((10, 12, 10, 30), (8, 8, 8, 6), 272)
    >>> bool((run.func[..., 5:7].values == lazy_synthetic_run(shape=(10, 12, 10), n_volumes=30).func[..., 5:7].values).all())
    True
    """
    import dask.array as da

    from lazymask import config
    from lazymask.io import image_dataarray

    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 1 or int(n_volumes) < 1:
        from lazymask.exceptions import ParameterError

        raise ParameterError(f"shape must be 3 positive ints and n_volumes positive; got {shape!r} and {n_volumes!r}.")
    dtype = np.dtype(dtype)
    volume_bytes = int(np.prod(shape)) * dtype.itemsize
    if chunks is None:
        chunks = max(1, config.get("auto_chunk_bytes") // volume_bytes)
    time_chunks = da.core.normalize_chunks(int(chunks), (int(n_volumes),))[0]
    template = da.empty((int(n_volumes),), chunks=(time_chunks,), dtype=np.int8)
    data = template.map_blocks(
        _synthetic_volumes, shape=shape, seed=int(seed), t_r=float(t_r), out_dtype=dtype,
        new_axis=[0, 1, 2], chunks=(*((n,) for n in shape), time_chunks), dtype=dtype,
        meta=np.empty((0, 0, 0, 0), dtype), name=f"lazy-synthetic-run-{seed}",
    )
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = -np.asarray(shape) + 1.0
    func = image_dataarray(data, affine, t_r=float(t_r), name="lazy_synthetic_run")
    mask = image_dataarray(_synthetic_brain(shape).astype(np.int8), affine, name="mask")
    return LazyRun(func=func, mask=mask, t_r=float(t_r))


def _synthetic_brain(shape) -> np.ndarray:
    """The ellipsoid (True inside) spanning about 76 % of each axis of ``shape``."""
    axes = [(np.arange(n) - (n - 1) / 2) / max(0.38 * n, 0.5) for n in shape]
    radius = axes[0][:, None, None] ** 2 + axes[1][None, :, None] ** 2 + axes[2][None, None, :] ** 2
    return radius <= 1.0


#: Extra Gaussian values in the noise pool beyond one volume: the range of the per-volume offsets.
_POOL_EXTRA = 1 << 16


def _synthetic_volumes(template: np.ndarray, shape, seed: int, t_r: float, out_dtype, block_info=None) -> np.ndarray:
    start, stop = block_info[None]["array-location"][3]
    n_voxels = int(np.prod(shape))
    brain = _synthetic_brain(shape)
    ramp = np.linspace(0.9, 1.1, shape[0], dtype=np.float32)[:, None, None]
    baseline = np.where(brain, 800.0 * ramp, 20.0).astype(np.float32)
    pool = np.random.default_rng(seed).standard_normal(n_voxels + _POOL_EXTRA, dtype=np.float32)
    pool *= np.float32(12.0)
    out = np.empty((*shape, stop - start), dtype=out_dtype, order="F")
    for t in range(start, stop):
        offset = int(np.random.default_rng([seed, t]).integers(_POOL_EXTRA))
        noise = pool[offset : offset + n_voxels].reshape(shape, order="F")
        drift = 1.0 + 0.02 * np.sin(2 * np.pi * 0.03 * t * t_r) + 1e-5 * t
        np.multiply(baseline, np.float32(drift), out=out[..., t - start])
        out[..., t - start] += noise
    return out
