"""Typed, read-only settings loaded from config.yaml.

The file is the single source of configuration. It is the one ``--config``
or ``CATDOG_CONFIG`` names, else ``config.yaml`` in the working folder, else
the source checkout's ``config.yaml`` when catdog runs from one (see
:func:`find_config`). Overlay files (``--config-overlay`` or
``CATDOG_CONFIG_OVERLAY``) are merged on top of it: each holds only the keys it
changes, e.g. ``config.local-datasets.yaml`` pointing the archives at local
copies. Single values are overridden with
``CATDOG__SECTION__KEY=value`` (read by pydantic-settings) or
``--set section.key=value``, which wins. Override values are parsed as YAML,
so ``3``, ``0.5``, ``true`` and ``[a, b]`` keep their types.

Relative paths written in a config file (the keys of :data:`PATH_KEYS`) are
relative to that file's folder, so a command finds the same folders from any
working folder; relative paths given in the environment or with ``--set`` are
relative to the working folder, as with any command-line argument.
``serving.site_dir``, the folder of the app's ``templates/`` and ``static/``,
defaults to the config file's own folder.

The pydantic models below hold every rule once. Any problem (unknown key,
missing key, wrong type, impossible value) raises :class:`ConfigError` with one
message naming the key and the bad value.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars

from catdog.errors import ConfigError

Architecture = Literal["inception", "resnet"]
Activation = Literal["relu", "leaky_relu"]  # leaky_relu: negative slope 0.01
ARCHITECTURES = get_args(Architecture)
ENV_PREFIX = "CATDOG__"
ENV_CONFIG = "CATDOG_CONFIG"
ENV_OVERLAY = "CATDOG_CONFIG_OVERLAY"  # overlay files, separated by os.pathsep
CONFIG_NAME = "config.yaml"
# The source checkout this module lies in (src/catdog/config.py). Only meaningful when catdog runs from one
# (an editable install, or src/ on the path): tests, benchmarks and the app's files; see source_checkout().
PROJECT_ROOT = Path(__file__).resolve().parents[2]
# Settings that are paths: a relative one in a config file is relative to that file's folder ("*": any archive).
# A source_url is anchored only when it is a plain path, not a URL.
PATH_KEYS = (
    "data.download_dir",
    "data.extract_dir",
    "data.artifacts_dir",
    "data.archives.*.source_url",
    "model.dir",
    "model.path",
    "serving.site_dir",
)


def _plain_name(text: str) -> str:
    if text in (".", "..") or any(c in text for c in "/\\\0"):
        raise ValueError("must be a plain name (no '/', '\\', '.' or '..')")
    return text


def _against(earlier: str, ok: Callable[[Any, Any], bool], message: str) -> Callable:
    """A field validator that checks the field against ``earlier``, a field declared (so validated) before it.

    The error is the later field's, so its message names that key and value.
    """

    def check(cls, value: Any, info: ValidationInfo) -> Any:
        other = info.data.get(earlier)  # absent when ``earlier`` itself was invalid
        if other is not None and not ok(other, value):
            raise ValueError(message.format(earlier=list(other) if isinstance(other, tuple) else other, value=value))
        return value

    return check


PositiveInt = Annotated[StrictInt, Field(gt=0)]
NonNegativeInt = Annotated[StrictInt, Field(ge=0)]
Fraction = Annotated[StrictFloat, Field(ge=0.0, lt=1.0)]
PlainName = Annotated[StrictStr, Field(min_length=1), AfterValidator(_plain_name)]
Names = Annotated[tuple[StrictStr, ...], Field(min_length=1)]
FloatRange = Annotated[tuple[StrictFloat, ...], Field(min_length=2, max_length=2)]  # [low, high]
IntRange = Annotated[tuple[StrictInt, ...], Field(min_length=2, max_length=2)]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ArchiveSettings(_Section):
    """One dataset archive: where to fetch it, where its photos come from and the folder it unpacks to.

    ``source_url`` is None for an archive with no public download (one we
    assembled from several public datasets): an overlay or ``--set`` points it
    at a copy. ``sources`` names the public pages of the data it holds.
    """

    source_url: Annotated[StrictStr, Field(min_length=1)] | None
    sha256: Annotated[StrictStr, Field(pattern=r"^[0-9a-fA-F]{64}$")] | None
    folder: PlainName
    # A default: configs written before it existed named no sources.
    sources: tuple[Annotated[StrictStr, Field(min_length=1)], ...] = ()


class DataSettings(_Section):
    archives: Annotated[dict[PlainName, ArchiveSettings], Field(min_length=1)]
    download_dir: StrictStr
    extract_dir: StrictStr
    classes: Annotated[tuple[StrictStr, ...], Field(min_length=2)]
    max_extract_bytes: PositiveInt
    artifacts_dir: StrictStr
    max_download_bytes: PositiveInt
    max_members: PositiveInt
    # Group (kind of photo) of each source whose SOURCES.csv has no group column: see catdog.data.groups.
    source_groups: dict[StrictStr, PlainName] = {}

    @field_validator("classes")
    @classmethod
    def _different(cls, classes: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(classes)) != len(classes):
            raise ValueError("must name two or more different classes")
        return classes

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


class AugmentationSettings(_Section):
    flip: StrictBool
    crop_scale: FloatRange
    crop_aspect: FloatRange
    low_res_share: Fraction
    low_res_sides: IntRange
    balance_low_res: StrictBool = False
    contrast: Fraction
    brightness: Fraction

    @field_validator("crop_scale")
    @classmethod
    def _scale(cls, value: tuple) -> tuple:
        if not 0.0 < value[0] <= value[1] <= 1.0:
            raise ValueError("must be [low, high] with 0 < low <= high <= 1")
        return value

    @field_validator("crop_aspect")
    @classmethod
    def _aspect(cls, value: tuple) -> tuple:
        if not 0.0 < value[0] <= 1.0 <= value[1]:
            raise ValueError("must be [low, high] with 0 < low <= 1 <= high")
        return value

    @field_validator("low_res_sides")
    @classmethod
    def _sides(cls, value: tuple) -> tuple:
        if not 1 <= value[0] <= value[1]:
            raise ValueError("must be [low, high] with 1 <= low <= high")
        return value


class HeadRefitSettings(_Section):
    """``catdog train --ensemble ... --refit-head``: one Dense head fitted over the members' features.

    Defaults: configs and run records from before it existed had none.
    """

    l2: Annotated[StrictFloat, Field(ge=0)] = 0.01
    epochs: PositiveInt = 30
    # Plain one-colour pictures without noise added to the Other class (synthetic_other's plain kind has noise).
    plain_pictures: NonNegativeInt = 400


class OtherWeightSettings(_Section):
    """Loss weight multipliers for the training photos of neither, to stress the kinds the model misses most.

    A photo's multiplier is its group's (:mod:`catdog.data.groups`; 1 for a group not named) times
    ``small`` when it is natively small (:func:`catdog.data.augment.natively_small`); the multipliers are
    then scaled so that the Other class keeps its total weight. Defaults: every photo alike, as configs and
    run records from before it existed trained.
    """

    groups: dict[PlainName, Annotated[StrictFloat, Field(gt=0)]] = {}
    small: Annotated[StrictFloat, Field(gt=0)] = 1.0

    @property
    def uniform(self) -> bool:
        """Whether every photo of neither weighs alike (nothing to compute)."""
        return self.small == 1.0 and all(value == 1.0 for value in self.groups.values())


# Each module: [1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool projection], all positive.
InceptionModule = Annotated[tuple[PositiveInt, ...], Field(min_length=6, max_length=6)]


class InceptionSettings(_Section):
    stem_filters: PositiveInt
    stages: Annotated[tuple[Annotated[tuple[InceptionModule, ...], Field(min_length=1)], ...], Field(min_length=1)]
    dropout: Fraction


class ResNetSettings(_Section):
    stem_filters: PositiveInt
    stage_filters: Annotated[tuple[PositiveInt, ...], Field(min_length=1)]
    blocks_per_stage: Annotated[tuple[PositiveInt, ...], Field(min_length=1)]
    activation: Activation
    dropout: Fraction

    _one_per_stage = field_validator("blocks_per_stage")(
        _against(
            "stage_filters",
            lambda filters, blocks: len(filters) == len(blocks),
            "must have as many entries as stage_filters {earlier!r}",
        )
    )


class TrainingSettings(_Section):
    architecture: Architecture
    image_size: Annotated[StrictInt, Field(ge=32)]
    batch_size: PositiveInt
    epochs: PositiveInt
    # Minutes for the whole fit: the learning-rate plan is laid over the epochs that fit in them (at most
    # ``epochs``). None: a run of ``epochs``. A default: configs and run records from before it existed had none.
    time_budget_minutes: Annotated[StrictFloat, Field(gt=0)] | None = None
    learning_rate: Annotated[StrictFloat, Field(gt=0)]
    warmup_epochs: NonNegativeInt
    weight_decay: Annotated[StrictFloat, Field(ge=0)]
    label_smoothing: Fraction
    class_weight_power: Annotated[StrictFloat, Field(ge=0.0, le=1.0)]
    balance_recall: tuple[StrictStr, ...]
    # A decision rule, not a calibration: an offset of the Other log-probability, used only to choose the answer,
    # answering Other for at most this share of full-size validation pets; the probabilities stay as calibrated.
    max_pets_as_other: Fraction | None = None
    # auto: mixed_bfloat16 only where the CPU does bfloat16 natively (see catdog/training/cpu.py)
    mixed_precision: StrictBool | Literal["auto"]
    early_stopping_patience: NonNegativeInt
    seed: StrictInt
    validation_fraction: Annotated[StrictFloat, Field(gt=0.0, lt=1.0)]
    test_fraction: Annotated[StrictFloat, Field(gt=0.0, lt=1.0)]
    # A default, unlike the rest: configs and run records from before it existed trained without them.
    synthetic_other: NonNegativeInt = 0
    # With `catdog train --distill-from TEACHER_H5`: the teacher's share in the cats' and dogs' targets
    # (catdog/training/distill.py). A default: configs and run records from before it existed had none.
    distill_weight: Annotated[StrictFloat, Field(ge=0.0, le=1.0)] = 0.7
    # With --distill-from: blend the teacher in for the photos of neither too (false: they keep their label).
    # Off by default, as configs and run records from before it existed kept Other's label.
    distill_other: StrictBool = False
    head_refit: HeadRefitSettings = HeadRefitSettings()
    other_weights: OtherWeightSettings = OtherWeightSettings()
    augmentation: AugmentationSettings
    inception: InceptionSettings
    resnet: ResNetSettings

    _room_to_train = field_validator("test_fraction")(
        _against(
            "validation_fraction",
            lambda validation, test: validation + test < 1.0,
            "validation_fraction + test_fraction must be below 1, got {earlier!r} + {value!r}",
        )
    )


class ModelSettings(_Section):
    dir: StrictStr
    path: StrictStr


class ServingSettings(_Section):
    max_upload_bytes: PositiveInt
    accepted_formats: Names
    max_pixels: PositiveInt
    max_request_pixels: PositiveInt
    min_side: PositiveInt
    max_batch: PositiveInt
    # Default for configs written before it existed: one thread, LiteRT's own choice then.
    litert_threads: PositiveInt = 1
    # auto: the int8 twin when its check passed, else float. A default, for configs written before it existed.
    precision: Literal["auto", "float", "int8"] = "auto"
    # The folder holding the app's templates/ and static/. Not in the installed package: a config file that
    # leaves it out gets its own folder (load_config), so a checkout's config.yaml finds the checkout's pages.
    site_dir: StrictStr

    _room_for_one_image = field_validator("max_request_pixels")(
        _against("max_pixels", lambda one, request: request >= one, "must be at least max_pixels ({earlier})")
    )


class BulkSettings(_Section):
    """``catdog classify``: how a photo collection is cut into work (defaults for configs written before it)."""

    batch_size: PositiveInt = 32
    part_files: PositiveInt = 1000


class Settings(BaseSettings):
    """All settings; ``CATDOG__SECTION__KEY`` environment variables are read by :func:`load_config`."""

    model_config = SettingsConfigDict(frozen=True, extra="forbid", env_prefix=ENV_PREFIX, env_nested_delimiter="__")

    data: DataSettings
    training: TrainingSettings
    model: ModelSettings
    serving: ServingSettings
    bulk: BulkSettings = BulkSettings()

    @model_validator(mode="after")
    def _balance_recall_names_two_classes(self) -> Settings:
        # A rule across two sections, raised as ConfigError itself (pydantic passes it on): pydantic's own error
        # would name the whole training section and print all of it as the bad value.
        classes, names = self.data.classes, self.training.balance_recall
        if names and (len(names) != 2 or names[0] == names[1] or not set(names) <= set(classes)):
            raise ConfigError(
                f"training.balance_recall: must name two of data.classes {list(classes)} or none, got {list(names)!r}"
            )
        return self

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, **other_sources):
        # Validation gets the merged mapping only: load_config reads the file, the environment and --set.
        return (init_settings,)

    def with_overrides(self, overrides: Mapping[str, Any]) -> Settings:
        """Return a checked copy with dotted keys (``training.epochs``) replaced."""
        raw = self.model_dump()
        for dotted, value in overrides.items():
            _set(raw, dotted, value)
        return _validate(raw)


class _YamlEnvSource(EnvSettingsSource):
    """``CATDOG__*`` variables of a given environment, each value parsed as YAML."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(Settings)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self._environ, False, False, None)

    def decode_complex_value(self, field_name: str, field: Any, value: Any) -> Any:
        return value  # every value is parsed as YAML once, in __call__

    def __call__(self) -> dict[str, Any]:
        prefix = ENV_PREFIX.lower()
        for name in self.env_vars:  # pydantic-settings skips a section it does not know; we refuse it
            section = name[len(prefix) :].split("__")[0]
            if name.startswith(prefix) and section not in Settings.model_fields:
                raise ConfigError(f"unknown config key {section!r} in environment variable {name.upper()}")
        return _parse_leaves(super().__call__(), ENV_PREFIX.rstrip("_"))


def load_config(
    path: str | os.PathLike | None = None,
    overrides: Iterable[str] = (),
    environ: Mapping[str, str] | None = None,
    overlays: Iterable[str | os.PathLike] | None = None,
) -> Settings:
    """Load, override and check the settings.

    Each layer wins over the one before: the file, the overlays in order, the
    ``CATDOG__*`` environment, then ``overrides``.

    Args:
        path: YAML file; defaults to :func:`find_config`'s choice.
        overrides: ``section.key=value`` strings, applied after the environment.
        environ: Environment to read ``CATDOG_CONFIG``, ``CATDOG_CONFIG_OVERLAY``
            and ``CATDOG__*`` from (defaults to ``os.environ``).
        overlays: YAML files holding some keys each, merged on top of the file
            (relative paths in them are relative to their own folder); None:
            those ``CATDOG_CONFIG_OVERLAY`` names.

    Returns:
        The checked, read-only settings.

    Raises:
        ConfigError: No config file was found, the file is unreadable or
            invalid, or a value is wrong.
    """
    environ = os.environ if environ is None else environ
    config_file = Path(path) if path else find_config(environ)
    raw = _read_file(config_file)
    serving = raw.get("serving")
    if isinstance(serving, dict):  # else validation names the missing or wrong section
        serving.setdefault("site_dir", str(config_file.parent))
    if overlays is None:
        overlays = [name for name in environ.get(ENV_OVERLAY, "").split(os.pathsep) if name]
    for overlay in overlays:
        _merge(raw, _read_file(Path(overlay)))
    _merge(raw, _YamlEnvSource(environ)())
    for item in overrides:
        dotted, sep, value = item.partition("=")
        if not sep or not dotted.strip():
            raise ConfigError(f"override must look like section.key=value, got {item!r}")
        _set(raw, dotted.strip(), _parse_value(dotted.strip(), value))
    return _validate(raw)


def find_config(environ: Mapping[str, str] | None = None) -> Path:
    """The config file to read when none is named: the first of these that is set or exists.

    1. ``$CATDOG_CONFIG``;
    2. ``config.yaml`` in the working folder;
    3. the source checkout's ``config.yaml``, when catdog runs from one.

    Args:
        environ: Environment to read ``CATDOG_CONFIG`` from (defaults to ``os.environ``).

    Raises:
        ConfigError: None of them is there; the message says where it looked.
    """
    environ = os.environ if environ is None else environ
    if environ.get(ENV_CONFIG):
        return Path(environ[ENV_CONFIG])
    local = Path(CONFIG_NAME)
    if local.is_file():
        return local
    checkout = source_checkout()
    if checkout is not None and (checkout / CONFIG_NAME).is_file():
        return checkout / CONFIG_NAME
    looked = [str(Path.cwd() / CONFIG_NAME)] + ([str(checkout / CONFIG_NAME)] if checkout else [])
    raise ConfigError(
        f"no config file: pass --config FILE or set {ENV_CONFIG} (looked for {' and '.join(map(repr, looked))}"
        + ("" if checkout else "; catdog is installed, not run from a source checkout")
        + ")"
    )


def source_checkout() -> Path | None:
    """The source checkout catdog runs from (an editable install or ``src/`` on the path), else None.

    An installed package lies in site-packages, with no ``src/`` folder and no
    ``pyproject.toml`` above it.
    """
    package = Path(__file__).resolve().parent
    if package.parent.name == "src" and (PROJECT_ROOT / "pyproject.toml").is_file():
        return PROJECT_ROOT
    return None


def _read_file(path: Path) -> dict:
    """A config file's mapping, its relative paths made relative to the file's folder."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of sections, got {type(raw).__name__}")
    _anchor_paths(raw, path.parent)
    return raw


def _anchor_paths(raw: dict, folder: Path) -> None:
    """Join each relative path of :data:`PATH_KEYS` in ``raw`` to ``folder``, in place (``~`` is expanded).

    ``folder`` is kept as given: for ``config.yaml`` in the working folder it
    is ``.``, and the paths stay as they are written.
    """
    for dotted in PATH_KEYS:
        for parent, key in _locate(raw, dotted.split(".")):
            value = parent[key]
            if isinstance(value, str) and value and _is_plain_path(value):
                parent[key] = str(folder / Path(value).expanduser())


def _locate(node: Any, parts: list[str]) -> Iterator[tuple[dict, str]]:
    """Yield (mapping, key) for each value at the dotted ``parts`` in ``node`` (``*``: every key)."""
    if not isinstance(node, dict):
        return
    head, *rest = parts
    for key in list(node) if head == "*" else [head] if head in node else []:
        if rest:
            yield from _locate(node[key], rest)
        else:
            yield node, key


def _is_plain_path(text: str) -> bool:
    """True for a file path, False for a URL (``https://``, ``file://``; a one-letter scheme is a drive)."""
    scheme = urllib.parse.urlsplit(text).scheme
    return scheme == "" or len(scheme) == 1


def _validate(raw: dict) -> Settings:
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc.errors()[0])) from None


def _describe(error: Mapping[str, Any]) -> str:
    """One line naming the key (pydantic's ``loc``) and the bad value."""
    key = ".".join(str(part) for part in error["loc"] if part != "[key]") or "config"
    if error["type"] == "missing":
        return f"missing config key {key!r}"
    if error["type"] == "extra_forbidden":
        return f"unknown config key {key!r}"
    message = (
        str(error["ctx"]["error"]) if error["type"] == "value_error" else error["msg"][:1].lower() + error["msg"][1:]
    )
    return f"{key}: {message}, got {error['input']!r}"


def _parse_value(name: str, text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {name} has a value that is not valid YAML: {text!r}") from exc


def _parse_leaves(node: Any, name: str) -> Any:
    if isinstance(node, dict):
        return {key: _parse_leaves(value, f"{name}__{key.upper()}") for key, value in node.items()}
    return _parse_value(name, node) if isinstance(node, str) else node


def _set(raw: dict, dotted: str, value: Any) -> None:
    """Set ``raw["a"]["b"] = value`` for ``dotted`` ``"a.b"`` (pydantic then rejects an unknown key)."""
    *parents, last = dotted.split(".")
    node = raw
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[last] = value


def _merge(base: dict, changes: Mapping[str, Any]) -> None:
    """Merge nested ``changes`` into ``base`` in place; a mapping replaces a scalar."""
    for key, value in changes.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
