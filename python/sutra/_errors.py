"""sutra's exceptions. Argument errors are plain ``ValueError`` / ``TypeError``."""

from __future__ import annotations

try:  # The native core registers its error type; Python-side errors derive from the same class.
    from ._core import SutraError
except ImportError:  # pragma: no cover - only while the extension is not built

    class SutraError(RuntimeError):  # type: ignore[no-redef]
        """Base class of sutra's runtime errors."""


class ModelNotFoundError(SutraError, LookupError):
    """A model name or folder could not be resolved to a usable model."""


class UnsupportedModelError(ModelNotFoundError, ValueError):
    """A model folder describes something sutra cannot run (a module, an architecture, a
    setting); raised when the folder is read, never skipped. The message names what and where."""


class ModelFetchError(SutraError):
    """Fetching a registered model from the package index failed; nothing was installed."""


class BackendUnavailableError(SutraError):
    """The requested backend or feature cannot run in this build or on this machine."""


class LongTextTruncatedWarning(UserWarning):
    """A text was longer than the model's maximum sequence length and was cut."""
