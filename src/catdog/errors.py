"""Exceptions raised by the library; the CLI and web layers translate them."""


class CatdogError(Exception):
    """Base class for every error this package raises on purpose."""


class ConfigError(CatdogError):
    """The configuration is missing, malformed or holds an impossible value."""


class DatasetError(CatdogError):
    """A dataset folder, archive or manifest is missing or unusable."""


class DownloadError(CatdogError):
    """The dataset archive could not be fetched or failed verification."""


class UnsafeArchiveError(DatasetError):
    """An archive member would escape the target folder or exceed a limit."""


class ModelError(CatdogError):
    """A model file is missing, unreadable or not a catdog model.

    Attributes:
        public: A short reason fit to show anyone: no path, no library's error text.
    """

    def __init__(self, message: str, public: str = "the model file is missing or unreadable"):
        super().__init__(message)
        self.public = public


class InvalidImage(CatdogError):
    """An image was refused.

    Attributes:
        reason: A short machine-readable code: ``empty``, ``not_image``,
            ``unsupported_format``, ``corrupt``, ``too_large``, ``too_small`` or
            ``too_complex`` (a JPEG with too many scans to decode in time).
    """

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


class JobError(CatdogError):
    """A bulk job cannot go on: a worker died, or the output holds another model's answers."""
