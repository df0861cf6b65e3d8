"""config.yaml loads, bad values fail with a message naming key and value, overrides work."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

from catdog import config
from catdog.cli import make_parser, settings_from_args
from catdog.config import ARCHITECTURES, load_config
from catdog.errors import ConfigError


def test_shipped_config_loads() -> None:
    settings = load_config(environ={})
    assert settings.data.classes == ("Cat", "Dog", "Other")
    assert settings.data.archives["petimages"].source_url.startswith("https://download.microsoft.com/")
    assert settings.data.archives["extra"].sha256 == "c676589354bb633cf2d3cf31de52fafc72fa0e86c48b95690630d8abb1777d65"
    assert settings.training.architecture in ARCHITECTURES
    assert settings.training.validation_fraction + settings.training.test_fraction < 1
    assert settings.data.dataset_dir == Path(settings.data.extract_dir)
    assert settings.data.archive_dir("extra") == Path(settings.data.extract_dir) / "extra"
    assert settings.data.collections == ("petimages/PetImages", "extra/Extra", "broad/Broad")


def test_settings_are_read_only() -> None:
    settings = load_config(environ={})
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        settings.training.epochs = 1  # type: ignore[misc]


def _set(dotted: str, value: Any) -> Callable[[dict], None]:
    def mutate(raw: dict) -> None:
        *parents, last = dotted.split(".")
        node = raw
        for part in parents:
            node = node[part]
        node[last] = value

    return mutate


def _delete(dotted: str) -> Callable[[dict], None]:
    def mutate(raw: dict) -> None:
        *parents, last = dotted.split(".")
        node = raw
        for part in parents:
            node = node[part]
        del node[last]

    return mutate


BAD_VALUES = [
    # (what is wrong, change to the shipped config, text the message must hold)
    ("unknown key", _set("data.colour", "red"), ["data.colour"]),
    ("unknown section", _set("extras", {"a": 1}), ["extras"]),
    ("missing key", _delete("training.epochs"), ["training.epochs"]),
    ("missing section", _delete("serving"), ["serving"]),
    ("wrong type: text for int", _set("training.epochs", "ten"), ["training.epochs", "'ten'"]),
    ("wrong type: float for int", _set("training.batch_size", 3.5), ["training.batch_size", "3.5"]),
    ("wrong type: text for bool", _set("training.augmentation.flip", "yes"), ["training.augmentation.flip", "'yes'"]),
    ("wrong type: scalar for list", _set("data.classes", "Cat"), ["data.classes", "'Cat'"]),
    ("wrong type: bool for number", _set("training.learning_rate", True), ["training.learning_rate", "True"]),
    ("negative size", _set("data.max_extract_bytes", -1), ["data.max_extract_bytes", "-1"]),
    ("negative upload limit", _set("serving.max_upload_bytes", -5), ["serving.max_upload_bytes", "-5"]),
    ("zero batch", _set("training.batch_size", 0), ["training.batch_size", "0"]),
    ("image too small", _set("training.image_size", 16), ["training.image_size", "16"]),
    ("fraction over 1", _set("training.test_fraction", 1.5), ["training.test_fraction", "1.5"]),
    (
        "fractions summing past 1",
        lambda raw: raw["training"].update(validation_fraction=0.6, test_fraction=0.5),
        ["training.test_fraction", "validation_fraction + test_fraction", "0.6", "0.5"],
    ),
    ("unknown architecture", _set("training.architecture", "vgg16"), ["training.architecture", "'vgg16'"]),
    (
        "resnet stage lists of different lengths",
        _set("training.resnet.blocks_per_stage", [1, 2]),
        ["training.resnet.blocks_per_stage", "[1, 2]"],
    ),
    ("empty inception stage", _set("training.inception.stages", [[]]), ["training.inception.stages", "[]"]),
    ("unknown activation", _set("training.resnet.activation", "tanh"), ["training.resnet.activation", "'tanh'"]),
    ("sha256 too short", _set("data.archives.extra.sha256", "abc123"), ["data.archives.extra.sha256", "'abc123'"]),
    ("sha256 not hex", _set("data.archives.extra.sha256", "z" * 64), ["data.archives.extra.sha256", "z" * 64]),
    (
        "archive folder with a slash",
        _set("data.archives.extra.folder", "../x"),
        ["data.archives.extra.folder", "'../x'"],
    ),
    (
        "archive name with a slash",
        _set("data.archives", {"a/b": {"source_url": "x.zip", "sha256": None, "folder": "X"}}),
        ["data.archives", "'a/b'"],
    ),
    ("no archive", _set("data.archives", {}), ["data.archives"]),
    ("archives not a mapping", _set("data.archives", ["x.zip"]), ["data.archives", "['x.zip']"]),
    ("archive missing a key", _delete("data.archives.extra.folder"), ["data.archives.extra.folder"]),
    ("one class", _set("data.classes", ["Cat"]), ["data.classes", "['Cat']"]),
    ("same class twice", _set("data.classes", ["Cat", "Cat"]), ["data.classes", "['Cat', 'Cat']"]),
    ("a name repeated among three", _set("data.classes", ["Cat", "Dog", "Cat"]), ["data.classes", "'Dog', 'Cat'"]),
    ("empty source", _set("data.archives.petimages.source_url", ""), ["data.archives.petimages.source_url"]),
    ("no accepted formats", _set("serving.accepted_formats", []), ["serving.accepted_formats"]),
    ("request pixels under one image's", _set("serving.max_request_pixels", 1000), ["serving.max_request_pixels"]),
    ("zero download limit", _set("data.max_download_bytes", 0), ["data.max_download_bytes", "0"]),
    ("negative member limit", _set("data.max_members", -1), ["data.max_members", "-1"]),
    (
        "augmentation out of range",
        _set("training.augmentation.contrast", 1.5),
        ["training.augmentation.contrast", "1.5"],
    ),
    (
        "crop scale reversed",
        _set("training.augmentation.crop_scale", [0.9, 0.2]),
        ["training.augmentation.crop_scale", "[0.9, 0.2]"],
    ),
    (
        "crop scale of one number",
        _set("training.augmentation.crop_scale", [0.5]),
        ["training.augmentation.crop_scale", "[0.5]"],
    ),
    (
        "crop aspect excluding square",
        _set("training.augmentation.crop_aspect", [1.2, 1.5]),
        ["training.augmentation.crop_aspect", "[1.2, 1.5]"],
    ),
    (
        "low-res sides of zero",
        _set("training.augmentation.low_res_sides", [0, 8]),
        ["training.augmentation.low_res_sides", "[0, 8]"],
    ),
    ("class weight power over 1", _set("training.class_weight_power", 2.0), ["training.class_weight_power", "2.0"]),
    ("mixed precision not a bool", _set("training.mixed_precision", "bf16"), ["training.mixed_precision", "'bf16'"]),
    *[
        (
            f"balance_recall naming {what}",
            _set("training.balance_recall", names),
            ["training.balance_recall", repr(names)],
        )
        for what, names in [
            ("an unknown class", ["Cat", "Cow"]),
            ("one class", ["Cat"]),
            ("a class twice", ["Dog"] * 2),
        ]
    ],
    (
        "inception module of five widths",
        _set("training.inception.stages", [[[32, 32, 48, 8, 16]]]),
        ["training.inception.stages", "[32, 32, 48, 8, 16]"],
    ),
]


@pytest.mark.parametrize(
    ("change", "expected"), [case[1:] for case in BAD_VALUES], ids=[case[0] for case in BAD_VALUES]
)
def test_bad_value_names_key_and_value(tmp_path: Path, shipped_config: dict, change, expected: list[str]) -> None:
    change(shipped_config)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(shipped_config), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    for text in expected:
        assert text in str(caught.value)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "cannot read config file"),
        ("data: [unclosed\n", "not valid YAML"),
        ("- just\n- a list\n", "must hold a mapping"),
    ],
    ids=["missing file", "invalid yaml", "not a mapping"],
)
def test_unreadable_config_file(tmp_path: Path, content: str | None, expected: str) -> None:
    path = tmp_path / "config.yaml"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match=expected) as caught:
        load_config(path, environ={})
    assert str(path) in str(caught.value)


def test_set_overrides_keep_yaml_types(config_file: Path) -> None:
    settings = load_config(
        config_file,
        ["training.epochs=3", "training.learning_rate=0.01", "training.augmentation.flip=false", "data.classes=[A, B]"],
        environ={},
    )
    assert settings.training.epochs == 3
    assert settings.training.learning_rate == 0.01
    assert settings.training.augmentation.flip is False
    assert settings.data.classes == ("A", "B")


def test_three_classes_are_accepted(config_file: Path) -> None:
    settings = load_config(config_file, ["data.classes=[Cat, Dog, Other]"], environ={})
    assert settings.data.classes == ("Cat", "Dog", "Other")


def test_environment_overrides(config_file: Path) -> None:
    environ = {"CATDOG__TRAINING__EPOCHS": "5", "CATDOG__TRAINING__AUGMENTATION__FLIP": "false"}
    settings = load_config(config_file, environ=environ)
    assert settings.training.epochs == 5
    assert settings.training.augmentation.flip is False


def test_archive_overrides_by_name(config_file: Path) -> None:
    environ = {"CATDOG__DATA__ARCHIVES__PETIMAGES__SOURCE_URL": "env.zip"}
    settings = load_config(config_file, ["data.archives.petimages.folder=Other"], environ=environ)
    assert settings.data.archives["petimages"].source_url == "env.zip"
    assert settings.data.archives["petimages"].folder == "Other"
    assert settings.data.archives["petimages"].sha256 is None


def test_process_environment_values_are_yaml(config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CATDOG__DATA__CLASSES", "[A, B]")  # YAML, not JSON
    monkeypatch.setenv("CATDOG__SERVING__MIN_SIDE", "4")
    settings = load_config(config_file)
    assert (settings.data.classes, settings.serving.min_side) == (("A", "B"), 4)


def test_set_wins_over_environment(config_file: Path) -> None:
    settings = load_config(config_file, ["training.epochs=7"], environ={"CATDOG__TRAINING__EPOCHS": "5"})
    assert settings.training.epochs == 7


def test_catdog_config_chooses_the_file(config_file: Path) -> None:
    settings = load_config(environ={"CATDOG_CONFIG": str(config_file)})
    assert settings.data.download_dir == str(config_file.parent / "downloads")


def test_cli_options_reach_the_loader(config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CATDOG__TRAINING__BATCH_SIZE", "8")
    args = make_parser("test", "test").parse_args(["--config", str(config_file), "--set", "training.epochs=2"])
    settings = settings_from_args(args)
    assert settings.data.extract_dir == str(config_file.parent / "raw")
    assert (settings.training.epochs, settings.training.batch_size) == (2, 8)


@pytest.mark.parametrize(
    ("overrides", "environ", "expected"),
    [
        (["training.epochz=3"], {}, "training.epochz"),
        (["nosection.key=1"], {}, "nosection"),
        (["training.epochs"], {}, "section.key=value"),
        (["training.epochs=-2"], {}, "training.epochs: input should be greater than 0, got -2"),
        (["training.epochs=[1"], {}, "training.epochs"),
        ([], {"CATDOG__TRAINING__EPOCHS": "many"}, "training.epochs: input should be a valid integer, got 'many'"),
        ([], {"CATDOG__TRAINING__NOPE": "1"}, "training.nope"),
        ([], {"CATDOG__NOSECTION__KEY": "1"}, "nosection"),
        ([], {"CATDOG__DATA__ARCHIVES__PETIMAGES__SHA256": "abc"}, "data.archives.petimages.sha256"),
    ],
    ids=[
        "unknown key",
        "unknown section",
        "no value",
        "impossible value",
        "bad yaml",
        "bad env type",
        "unknown env key",
        "unknown env section",
        "bad env archive value",
    ],
)
def test_bad_overrides(config_file: Path, overrides: list[str], environ: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(config_file, overrides, environ=environ)
    assert expected in str(caught.value)


def test_with_overrides_returns_checked_copy(settings) -> None:
    before = settings.training.epochs
    changed = settings.with_overrides({"training.epochs": before + 1})
    assert changed.training.epochs == before + 1
    assert settings.training.epochs == before
    with pytest.raises(ConfigError, match="training.epochs"):
        settings.with_overrides({"training.epochs": -1})


# --- paths and where the config file is found -----------------------------------------------------


def _write_config(folder: Path, shipped_config: dict, **data: Any) -> Path:
    """The shipped config with ``data`` values replaced, written to ``folder/config.yaml``."""
    shipped_config["data"].update(data)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(shipped_config), encoding="utf-8")
    return path


def test_relative_paths_in_the_file_are_relative_to_its_folder(tmp_path: Path, shipped_config: dict) -> None:
    shipped_config["model"] = {"dir": "model", "path": "model/model.h5"}
    archives = {
        "local": {"source_url": "source/a.zip", "sha256": None, "folder": "A"},
        "web": {"source_url": "https://example.org/b.zip", "sha256": None, "folder": "B"},
        "absolute": {"source_url": str(tmp_path / "c.zip"), "sha256": None, "folder": "C"},
        "url": {"source_url": "file:///srv/d.zip", "sha256": None, "folder": "D"},
    }
    path = _write_config(tmp_path / "conf", shipped_config, archives=archives, download_dir="dl", extract_dir="../raw")
    settings = load_config(path, environ={})
    here = path.parent
    assert settings.data.download_dir == str(here / "dl")
    assert settings.data.extract_dir == str(here / "../raw")
    assert settings.data.artifacts_dir == str(here / "artifacts")
    assert (settings.model.dir, settings.model.path) == (str(here / "model"), str(here / "model/model.h5"))
    assert settings.serving.site_dir == str(here)  # "." in config.yaml: the pages beside the file
    sources = {name: archive.source_url for name, archive in settings.data.archives.items()}
    assert sources == {
        "local": str(here / "source/a.zip"),
        "web": "https://example.org/b.zip",
        "absolute": str(tmp_path / "c.zip"),
        "url": "file:///srv/d.zip",
    }


def test_relative_paths_given_on_the_command_line_or_environment_are_relative_to_the_working_folder(
    tmp_path: Path, shipped_config: dict
) -> None:
    path = _write_config(tmp_path / "conf", shipped_config)
    environ = {"CATDOG__DATA__EXTRACT_DIR": "env-raw", "CATDOG__DATA__ARCHIVES__EXTRA__SOURCE_URL": "x.zip"}
    settings = load_config(path, ["data.download_dir=cli-dl", "model.path=m.h5"], environ=environ)
    assert (settings.data.download_dir, settings.data.extract_dir, settings.model.path) == ("cli-dl", "env-raw", "m.h5")
    assert settings.data.archives["extra"].source_url == "x.zip"
    assert settings.data.artifacts_dir == str(path.parent / "artifacts")  # from the file


def test_the_shipped_config_trains_into_artifacts_and_serves_from_model() -> None:
    """model/ holds what is served and the networks it was made from; whatever training writes goes to artifacts/."""
    settings = load_config(config.PROJECT_ROOT / "config.yaml", environ={})
    assert Path(settings.model.dir).is_relative_to(settings.data.artifacts_dir)
    assert Path(settings.model.dir) == config.PROJECT_ROOT / "artifacts" / "models"
    assert Path(settings.model.path) == config.PROJECT_ROOT / "model" / "model.h5"


def test_a_config_file_without_site_dir_finds_the_pages_in_its_own_folder(tmp_path: Path, shipped_config: dict) -> None:
    del shipped_config["serving"]["site_dir"]
    path = _write_config(tmp_path / "conf", shipped_config)
    assert load_config(path, environ={}).serving.site_dir == str(path.parent)
    # Only the file sets the default: a value from the environment or --set still wins.
    assert load_config(path, environ={"CATDOG__SERVING__SITE_DIR": "/srv/site"}).serving.site_dir == "/srv/site"
    assert load_config(path, ["serving.site_dir=site"], environ={}).serving.site_dir == "site"


def test_a_config_file_in_the_working_folder_keeps_its_paths_as_written(
    tmp_path: Path, shipped_config: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_config(tmp_path, shipped_config)
    monkeypatch.chdir(tmp_path)
    settings = load_config(environ={})
    assert (settings.data.download_dir, settings.model.path) == ("data/downloads", "model/model.h5")


def test_find_config_order(tmp_path: Path, shipped_config: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """$CATDOG_CONFIG, else ./config.yaml, else the checkout's."""
    monkeypatch.chdir(tmp_path)
    checkout = config.source_checkout()
    assert checkout is not None  # the tests run from the source tree
    assert config.find_config({}) == checkout / "config.yaml"
    _write_config(tmp_path, shipped_config)
    assert config.find_config({}) == Path("config.yaml")
    assert config.find_config({"CATDOG_CONFIG": "other.yaml"}) == Path("other.yaml")


def test_an_installed_package_without_a_config_file_says_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(config, "source_checkout", lambda: None)
    with pytest.raises(ConfigError) as caught:
        load_config(environ={})
    message = str(caught.value)
    assert "--config" in message and "CATDOG_CONFIG" in message
    assert str(tmp_path / "config.yaml") in message
    assert "not run from a source checkout" in message


# --- overlays ----------------------------------------------------------------------------------------


def _write_overlay(path: Path, content: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(content), encoding="utf-8")
    return path


def test_an_overlay_changes_only_its_keys_and_its_paths_are_relative_to_it(config_file: Path, tmp_path: Path) -> None:
    overlay = _write_overlay(
        tmp_path / "local" / "datasets.yaml",
        {"data": {"archives": {"petimages": {"source_url": "copies/pets.zip", "sha256": "ab" * 32}}}},
    )
    settings = load_config(config_file, environ={}, overlays=[overlay])
    archive = settings.data.archives["petimages"]
    assert (archive.source_url, archive.sha256) == (str(overlay.parent / "copies/pets.zip"), "ab" * 32)
    assert archive.folder == "PetImages"  # kept from the file
    assert settings.data.download_dir == str(tmp_path / "downloads")


def test_overlays_apply_in_order_under_the_environment_and_set(config_file: Path, tmp_path: Path) -> None:
    first = _write_overlay(tmp_path / "a.yaml", {"training": {"epochs": 3, "batch_size": 4, "seed": 1}})
    second = _write_overlay(tmp_path / "b.yaml", {"training": {"epochs": 5, "batch_size": 6}})
    settings = load_config(
        config_file, ["training.epochs=9"], environ={"CATDOG__TRAINING__BATCH_SIZE": "8"}, overlays=[first, second]
    )
    assert (settings.training.seed, settings.training.batch_size, settings.training.epochs) == (1, 8, 9)


def test_catdog_config_overlay_names_overlays_unless_given(config_file: Path, tmp_path: Path) -> None:
    first = _write_overlay(tmp_path / "a.yaml", {"training": {"epochs": 3}})
    second = _write_overlay(tmp_path / "b.yaml", {"training": {"seed": 7}})
    environ = {"CATDOG_CONFIG_OVERLAY": f"{first}{os.pathsep}{second}"}
    settings = load_config(config_file, environ=environ)
    assert (settings.training.epochs, settings.training.seed) == (3, 7)
    assert load_config(config_file, environ=environ, overlays=[second]).training.epochs != 3
    args = make_parser("test", "test").parse_args(["--config", str(config_file), "--config-overlay", str(first)])
    assert settings_from_args(args).training.epochs == 3


def test_a_bad_overlay_is_named(config_file: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file .*missing.yaml"):
        load_config(config_file, environ={}, overlays=[tmp_path / "missing.yaml"])
    bad = _write_overlay(tmp_path / "bad.yaml", {"training": {"epochz": 3}})
    with pytest.raises(ConfigError, match="training.epochz"):
        load_config(config_file, environ={}, overlays=[bad])


def test_each_shipped_archive_has_a_public_download_or_names_its_public_sources(shipped_config: dict) -> None:
    for name, archive in shipped_config["data"]["archives"].items():
        assert archive["source_url"] is None or archive["source_url"].startswith("https://"), name
        assert archive["sources"] and all(url.startswith(("https://", "http://")) for url in archive["sources"]), name


def test_the_local_datasets_overlay_names_a_copy_of_every_archive() -> None:
    overlay = config.PROJECT_ROOT / "config.local-datasets.yaml"
    settings = load_config(config.PROJECT_ROOT / "config.yaml", environ={}, overlays=[overlay])
    for name, archive in settings.data.archives.items():
        assert archive.source_url == str(config.PROJECT_ROOT / "../shared/datasets" / Path(archive.source_url).name)
        assert archive.sha256, name
