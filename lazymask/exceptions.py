"""The errors lazymask raises.

Every error says what was found, what was expected and how to fix it, and names the file or
parameter concerned. All of them derive from :class:`LazymaskError`, and each also derives from
the built-in exception a caller would catch without knowing lazymask (``ValueError``,
``FileNotFoundError``, ...).
"""

__all__ = [
    "LazymaskError",
    "ImageFileNotFoundError",
    "NotNiftiError",
    "CorruptImageError",
    "DimensionError",
    "EmptyImageError",
    "ImageMismatchError",
    "ImageTooLargeError",
    "ParameterError",
    "EmptyInputError",
    "ShapeMismatchError",
    "InputTypeError",
    "NotFittedError",
    "UnsafeTargetError",
    "CorruptStoreError",
    "SourceChangedError",
    "StorageError",
    "AllVolumesRemovedError",
    "MeshDimensionError",
    "NotImplementedWarning",
    "ParameterTypeError",
]


class LazymaskError(Exception):
    """Base class of every error raised by lazymask."""


class ImageFileNotFoundError(LazymaskError, FileNotFoundError):
    """An image file (or zarr store) does not exist."""


class NotNiftiError(LazymaskError, ValueError):
    """A file exists but is not a NIfTI-1/NIfTI-2 image (or not a lazymask zarr store)."""


class CorruptImageError(LazymaskError, OSError):
    """A file's data is truncated or corrupt (found at open when the header tells, else at read)."""


class DimensionError(LazymaskError, ValueError, TypeError):
    """An image has the wrong number of dimensions (for example 5D where 4D is expected).

    A ``ValueError`` and, as nilearn's ``DimensionError``, a ``TypeError``. Built from a message,
    or as nilearn builds it, ``DimensionError(file_dimension, required_dimension[, detail])``:
    the message then starts with nilearn's ("Input data has incompatible dimensionality: ...")
    and ends with ``detail``.

    Examples
    --------
    >>> str(DimensionError(4, 3)).split(".")[0]
    'Input data has incompatible dimensionality: Expected dimension is 3D and you provided a 4D image'
    """

    def __init__(self, *args):
        self.file_dimension = self.required_dimension = None
        self.stack_counter = 0
        self.detail = ""
        if len(args) in (2, 3) and all(isinstance(a, int) for a in args[:2]):
            self.file_dimension, self.required_dimension = args[:2]
            self.detail = args[2] if len(args) == 3 else ""
        super().__init__(*args)

    def increment_stack_counter(self) -> None:
        """One more level of lists around the image (nilearn's protocol for nested inputs)."""
        self.stack_counter += 1

    @property
    def message(self) -> str:
        """The error's message."""
        if self.file_dimension is None:
            return str(self.args[0]) if self.args else ""
        depth = self.stack_counter
        expected = self.required_dimension + depth
        provided = f"{'list of ' * depth}{self.file_dimension}D image{'s' if depth else ''}"
        total = f" ({self.file_dimension + depth}D)" if depth else ""
        text = (f"Input data has incompatible dimensionality: Expected dimension is {expected}D and you "
                f"provided a {provided}{total}.")
        return f"{text} {self.detail}" if self.detail else text

    def __str__(self) -> str:
        return self.message


class EmptyImageError(DimensionError, CorruptImageError):
    """An image with an axis of length 0 (nilearn's "The image is empty" ``DimensionError``)."""


class ImageMismatchError(LazymaskError, ValueError):
    """Images that must share a grid (shape and affine) do not."""


class ImageTooLargeError(LazymaskError, ValueError):
    """A header declares dimensions that no real image has (absurd memory)."""


class ParameterError(LazymaskError, ValueError):
    """A parameter has a value that is not allowed."""


class ParameterTypeError(ParameterError, TypeError):
    """A parameter or input is of the wrong type (e.g. not an image): a ``TypeError`` too, as nilearn's."""


#: nilearn's ``TypeError`` for an input that cannot be read as an image (one class with the above).
InputTypeError = ParameterTypeError


class EmptyInputError(ParameterError, TypeError):
    """An empty list where images or arrays are expected (a ``TypeError`` too, as nilearn's)."""


class ShapeMismatchError(ParameterError, TypeError):
    """An array whose shape does not fit (signals for another mask); a ``TypeError`` too, as nilearn's."""


class NotFittedError(LazymaskError, ValueError, AttributeError):
    """An estimator is used before ``fit`` (same bases as scikit-learn's ``NotFittedError``)."""


class UnsafeTargetError(LazymaskError, FileExistsError):
    """A write's target holds something that is not a complete lazymask store of the same kind."""


class CorruptStoreError(LazymaskError, OSError):
    """A store's chunk or metadata is missing, corrupt, or disagrees with what was recorded as written."""


class SourceChangedError(LazymaskError, OSError):
    """A source file changed (size, mtime or inode) between opening it and reading its data."""


class StorageError(LazymaskError, OSError):
    """A storage location refused a write or a read (full, read-only, unreachable); nothing was published."""


class AllVolumesRemovedError(LazymaskError, ValueError):
    """Scrubbing or a sample mask removed every volume of a run (nilearn's class of the same name).

    Its message starts with nilearn's; ``detail`` (optional) says which run and mask.

    Examples
    --------
    >>> str(AllVolumesRemovedError()).split(".")[0]
    'The size of the sample mask is 0'
    """

    def __init__(self, detail: str = ""):
        message = "The size of the sample mask is 0. All volumes were marked as motion outliers can not proceed."
        super().__init__(f"{message} {detail}" if detail else message)


class MeshDimensionError(LazymaskError, ValueError):
    """Surface meshes of incompatible sizes (nilearn's class; lazymask has no surfaces yet)."""


class NotImplementedWarning(UserWarning):
    """A parameter value is accepted but not acted on (nilearn's warning class of the same name)."""
