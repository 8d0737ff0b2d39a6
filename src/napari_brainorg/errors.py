"""Exceptions and warnings raised by napari-brainorg.

Every exception subclasses a built-in, so ``except ValueError`` keeps working,
and every message names the file or parameter, the value given and what was
expected.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class BrainorgError(Exception):
    """Base class of every napari-brainorg error."""


class StoryFormatError(BrainorgError, ValueError):
    """A story file (timed words) cannot be read."""


class ShapeError(BrainorgError, ValueError):
    """An array or image does not have the shape that was expected."""


class FMRIInputError(BrainorgError, ValueError):
    """fMRI data that cannot be used as given (NaN, constant, wrong grid...)."""


class AtlasError(BrainorgError, ValueError):
    """A functional-brain-network template that cannot be used."""


class ModelNotFoundError(BrainorgError, FileNotFoundError):
    """A language model that cannot be found (offline, wrong path, unknown name)."""


class ConfigError(BrainorgError, ValueError):
    """A configuration value or key that is not allowed."""


class NotFittedError(BrainorgError, ValueError, AttributeError):
    """An estimator used before ``fit``."""


class CancelledError(BrainorgError, RuntimeError):
    """A long job stopped because the user cancelled it."""


class MissingDependencyError(BrainorgError, ImportError):
    """An optional package that a feature needs is not installed (the message says how to get it)."""


class FolderInUseError(BrainorgError, RuntimeError):
    """A result folder that another run is writing (its lock is held)."""


class IncompleteResultError(BrainorgError, ValueError):
    """A result folder whose run did not finish (no ``summary.json``): it may mix runs."""


class CorruptFileError(BrainorgError, ValueError):
    """A file that exists but cannot be read (truncated, not the expected format)."""


class BrainorgWarning(UserWarning):
    """Base class of napari-brainorg's warnings."""


class VerdictWarning(BrainorgWarning):
    """A result a reader could misread, said in words: a model not ahead of a baseline,
    atoms that add nothing beyond the nuisance regressors, layers that beat the atoms,
    links a story-free baseline matches, a null result."""


class FilledTimesWarning(BrainorgWarning):
    """Word times that were missing in a story file were filled in."""


class DroppedANsWarning(BrainorgWarning):
    """Artificial neurons with no variance were dropped."""


class ResamplingWarning(BrainorgWarning):
    """An image was resampled to another grid."""


class CacheMismatchWarning(BrainorgWarning):
    """A file a finished step wrote has changed since; the step runs again."""


class StoryTimingWarning(BrainorgWarning):
    """Many words of the story fall outside the scan."""


def did_you_mean(value: str, allowed: Iterable[str]) -> str:
    """Return ``" Did you mean 'x'?"`` for the closest allowed name, or ``""``."""
    close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def check_choice(name: str, value, allowed: Iterable[str]) -> None:
    """Raise :class:`ConfigError` when ``value`` is not one of ``allowed``.

    The message follows nilearn's: "'atlas' must be one of [...]; 'yeo8' was provided."
    """
    allowed = list(allowed)
    if value not in allowed:
        raise ConfigError(
            f"{name!r} must be one of {allowed}; {value!r} was provided."
            + did_you_mean(value, allowed)
        )


class ConfigWarning(BrainorgWarning):
    """An option value that runs but is unlikely to be what was meant (no sparsity, test
    blocks of a few volumes)."""
