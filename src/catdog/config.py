"""Typed, read-only settings loaded from config.yaml.

The file is the single source of configuration. A different file can be
chosen with ``--config`` or the ``CATDOG_CONFIG`` environment variable, and
single values overridden with ``--set section.key=value`` or
``CATDOG__SECTION__KEY=value`` (values are parsed as YAML, so ``3``,
``0.5``, ``true`` and ``[a, b]`` keep their types).

Every problem (unknown key, missing key, wrong type, impossible value) raises
:class:`ConfigError` with one message naming the key and the bad value.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from catdog.errors import ConfigError

ARCHITECTURES = ("inception", "resnet")
ACTIVATIONS = ("relu", "leaky_relu")
ENV_PREFIX = "CATDOG__"
ENV_CONFIG = "CATDOG_CONFIG"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = PROJECT_ROOT / "config.yaml"


@dataclasses.dataclass(frozen=True)
class ArchiveSettings:
    """One dataset archive: where to fetch it and the folder it unpacks to."""

    source_url: str
    sha256: str | None
    folder: str

    def check(self, at: str) -> None:
        if self.sha256 is not None and (len(self.sha256) != 64 or not _is_hex(self.sha256)):
            raise ConfigError(f"{at}.sha256 must be 64 hex digits or null, got {self.sha256!r}")
        if not self.source_url:
            raise ConfigError(f"{at}.source_url must not be empty")
        if not _plain_name(self.folder):
            raise ConfigError(f"{at}.folder must be a plain folder name, got {self.folder!r}")


@dataclasses.dataclass(frozen=True)
class DataSettings:
    archives: dict[str, ArchiveSettings]
    download_dir: str
    extract_dir: str
    classes: tuple[str, ...]
    max_extract_bytes: int
    artifacts_dir: str
    max_download_bytes: int
    max_members: int

    def check(self, at: str) -> None:
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            raise ConfigError(f"{at}.classes must name two or more different classes, got {list(self.classes)!r}")
        if not self.archives:
            raise ConfigError(f"{at}.archives must name at least one archive")
        for name in self.archives:
            if not _plain_name(name):
                raise ConfigError(f"{at}.archives: {name!r} is not a plain name")
        _positive(f"{at}.max_extract_bytes", self.max_extract_bytes)
        _positive(f"{at}.max_download_bytes", self.max_download_bytes)
        _positive(f"{at}.max_members", self.max_members)

    @property
    def dataset_dir(self) -> Path:
        """Folder that every archive unpacks under, one sub-folder per archive."""
        return Path(self.extract_dir)

    def archive_dir(self, name: str) -> Path:
        """Folder archive ``name`` unpacks into (it holds the archive's own top folder)."""
        return Path(self.extract_dir) / name

    @property
    def collections(self) -> tuple[str, ...]:
        """Each archive's class folders' parent, relative to :attr:`dataset_dir`."""
        return tuple(f"{name}/{archive.folder}" for name, archive in self.archives.items())


@dataclasses.dataclass(frozen=True)
class AugmentationSettings:
    flip: bool
    crop_scale: tuple[float, ...]
    crop_aspect: tuple[float, ...]
    low_res_share: float
    low_res_sides: tuple[int, ...]
    contrast: float
    brightness: float

    def check(self, at: str) -> None:
        for name in ("low_res_share", "contrast", "brightness"):
            _fraction(f"{at}.{name}", getattr(self, name))
        low, high = _range(f"{at}.crop_scale", self.crop_scale)
        if not 0.0 < low <= high <= 1.0:
            raise ConfigError(f"{at}.crop_scale must be [low, high] with 0 < low <= high <= 1, got {list(self.crop_scale)!r}")
        low, high = _range(f"{at}.crop_aspect", self.crop_aspect)
        if not 0.0 < low <= 1.0 <= high:
            raise ConfigError(f"{at}.crop_aspect must be [low, high] with 0 < low <= 1 <= high, got {list(self.crop_aspect)!r}")
        low, high = _range(f"{at}.low_res_sides", self.low_res_sides)
        if not 1 <= low <= high:
            raise ConfigError(f"{at}.low_res_sides must be [low, high] with 1 <= low <= high, got {list(self.low_res_sides)!r}")


@dataclasses.dataclass(frozen=True)
class InceptionSettings:
    stem_filters: int
    stages: tuple[tuple[tuple[int, ...], ...], ...]
    dropout: float

    def check(self, at: str) -> None:
        _positive(f"{at}.stem_filters", self.stem_filters)
        if not self.stages or any(not stage for stage in self.stages):
            raise ConfigError(f"{at}.stages must hold at least one non-empty stage, got {self.stages!r}")
        for stage in self.stages:
            for module in stage:
                if len(module) != 6 or any(width <= 0 for width in module):
                    raise ConfigError(f"{at}.stages: each module needs six positive widths, got {list(module)!r}")
        _fraction(f"{at}.dropout", self.dropout)


@dataclasses.dataclass(frozen=True)
class ResNetSettings:
    stem_filters: int
    stage_filters: tuple[int, ...]
    blocks_per_stage: tuple[int, ...]
    activation: str
    dropout: float

    def check(self, at: str) -> None:
        _positive(f"{at}.stem_filters", self.stem_filters)
        if not self.stage_filters or len(self.stage_filters) != len(self.blocks_per_stage):
            raise ConfigError(
                f"{at}.stage_filters and {at}.blocks_per_stage must be non-empty and the same length, "
                f"got {list(self.stage_filters)!r} and {list(self.blocks_per_stage)!r}"
            )
        for value in (*self.stage_filters, *self.blocks_per_stage):
            _positive(f"{at}.stage_filters/blocks_per_stage", value)
        _choice(f"{at}.activation", self.activation, ACTIVATIONS)
        _fraction(f"{at}.dropout", self.dropout)


@dataclasses.dataclass(frozen=True)
class TrainingSettings:
    architecture: str
    image_size: int
    batch_size: int
    epochs: int
    learning_rate: float
    warmup_epochs: int
    weight_decay: float
    label_smoothing: float
    class_weight_power: float
    mixed_precision: bool
    early_stopping_patience: int
    seed: int
    validation_fraction: float
    test_fraction: float
    augmentation: AugmentationSettings
    inception: InceptionSettings
    resnet: ResNetSettings

    def check(self, at: str) -> None:
        _choice(f"{at}.architecture", self.architecture, ARCHITECTURES)
        if self.image_size < 32:
            raise ConfigError(f"{at}.image_size must be at least 32, got {self.image_size!r}")
        for name in ("batch_size", "epochs", "learning_rate"):
            _positive(f"{at}.{name}", getattr(self, name))
        for name in ("warmup_epochs", "weight_decay", "early_stopping_patience"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{at}.{name} must not be negative, got {getattr(self, name)!r}")
        _fraction(f"{at}.label_smoothing", self.label_smoothing)
        if not 0.0 <= self.class_weight_power <= 1.0:
            raise ConfigError(f"{at}.class_weight_power must be in [0, 1], got {self.class_weight_power!r}")
        for name in ("validation_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise ConfigError(f"{at}.{name} must be between 0 and 1, got {value!r}")
        total = self.validation_fraction + self.test_fraction
        if total >= 1.0:
            raise ConfigError(
                f"{at}.validation_fraction + {at}.test_fraction must be below 1, "
                f"got {self.validation_fraction!r} + {self.test_fraction!r} = {total:g}"
            )


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    dir: str
    path: str


@dataclasses.dataclass(frozen=True)
class ServingSettings:
    max_upload_bytes: int
    accepted_formats: tuple[str, ...]
    max_pixels: int
    max_request_pixels: int
    min_side: int
    max_batch: int

    def check(self, at: str) -> None:
        for name in ("max_upload_bytes", "max_pixels", "max_request_pixels", "min_side", "max_batch"):
            _positive(f"{at}.{name}", getattr(self, name))
        if self.max_request_pixels < self.max_pixels:
            raise ConfigError(
                f"{at}.max_request_pixels must be at least {at}.max_pixels ({self.max_pixels}), "
                f"got {self.max_request_pixels!r}"
            )
        if not self.accepted_formats:
            raise ConfigError(f"{at}.accepted_formats must not be empty")


@dataclasses.dataclass(frozen=True)
class Settings:
    data: DataSettings
    training: TrainingSettings
    model: ModelSettings
    serving: ServingSettings

    def with_overrides(self, overrides: Mapping[str, Any]) -> "Settings":
        """Return a copy with dotted keys (``training.epochs``) replaced."""
        raw = dataclasses.asdict(self)
        for dotted, value in overrides.items():
            _set_dotted(raw, dotted, value)
        return _build(Settings, raw, "")


def load_config(
    path: str | os.PathLike | None = None,
    overrides: Iterable[str] = (),
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Load, override and check the settings.

    Args:
        path: YAML file; defaults to ``$CATDOG_CONFIG`` or the project's config.yaml.
        overrides: ``section.key=value`` strings, applied after the environment.
        environ: Environment to read ``CATDOG_CONFIG`` and ``CATDOG__*`` from
            (defaults to ``os.environ``).

    Returns:
        The checked, read-only settings.

    Raises:
        ConfigError: The file is missing or invalid, or a value is wrong.
    """
    environ = os.environ if environ is None else environ
    path = Path(path or environ.get(ENV_CONFIG) or DEFAULT_CONFIG)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of sections, got {type(raw).__name__}")

    for key, value in sorted(environ.items()):
        if key.startswith(ENV_PREFIX):
            dotted = key[len(ENV_PREFIX):].lower().replace("__", ".")
            _set_dotted(raw, dotted, _parse_value(key, value))
    for item in overrides:
        dotted, sep, value = item.partition("=")
        if not sep or not dotted.strip():
            raise ConfigError(f"override must look like section.key=value, got {item!r}")
        _set_dotted(raw, dotted.strip(), _parse_value(dotted, value))
    return _build(Settings, raw, "")


def _parse_value(name: str, text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {name} has a value that is not valid YAML: {text!r}") from exc


def _set_dotted(raw: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if not isinstance(child, dict):
            raise ConfigError(f"unknown config key {'.'.join(parts[: i + 1])!r} in override {dotted!r}")
        node = child
    if parts[-1] not in node:
        raise ConfigError(f"unknown config key {dotted!r}")
    node[parts[-1]] = value


def _build(cls: type, raw: Any, at: str) -> Any:
    """Turn a mapping into dataclass ``cls``, checking keys and types."""
    where = at or "config"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"unknown config key {_join(at, unknown[0])!r} (allowed: {', '.join(fields)})")
    values = {}
    for name in fields:
        key = _join(at, name)
        if name not in raw:
            raise ConfigError(f"missing config key {key!r}")
        values[name] = _coerce(hints[name], raw[name], key)
    obj = cls(**values)
    if hasattr(obj, "check"):
        obj.check(at)
    return obj


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(inner, value, key)
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{key} must be a mapping of names, got {value!r}")
        return {name: _coerce(args[1], item, _join(key, name)) for name, item in value.items()}
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return tuple(_coerce(args[0], item, key) for item in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported settings type {hint!r} for {key}")  # a bug in this module


def _join(at: str, name: str) -> str:
    return f"{at}.{name}" if at else name


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


def _range(key: str, values: tuple) -> tuple:
    if len(values) != 2:
        raise ConfigError(f"{key} must be a list of two numbers [low, high], got {list(values)!r}")
    return values[0], values[1]


def _plain_name(text: str) -> bool:
    return bool(text) and text not in (".", "..") and "/" not in text and "\\" not in text and "\0" not in text


def _positive(key: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(f"{key} must be positive, got {value!r}")


def _fraction(key: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"{key} must be in [0, 1), got {value!r}")


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key} must be one of {', '.join(allowed)}, got {value!r}")
