"""The command line: one entry point listing the steps, logging set up once, -v for every step."""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import catdog
from catdog import cli


def test_help_lists_every_step(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for step, (_, summary) in cli.STEPS.items():
        assert step in out and summary in out


@pytest.mark.parametrize("step", list(cli.STEPS))
def test_each_step_answers_its_own_help(step, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([step, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert f"catdog {step}" in out or f"python -m {cli.STEPS[step][0]}" in out
    assert "--verbose" in out
    # train_pack runs where config.yaml may differ: its settings come in the pack.
    assert ("--config" in out) == (step != "train_pack")


def test_an_unknown_step_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bogus"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'bogus'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "level"), [([], logging.INFO), (["-v"], logging.DEBUG), (["--verbose"], logging.DEBUG)]
)
def test_verbose_sets_the_level_of_every_catdog_logger(argv, level, monkeypatch):
    monkeypatch.setattr(logging.getLogger("catdog"), "level", logging.NOTSET)
    cli.make_parser("catdog test", "test").parse_args(argv)
    assert logging.getLogger("catdog.training.train").getEffectiveLevel() == level


@pytest.mark.parametrize("step", ["ingest", "validate", "train", "evaluate", "ship", "leave_one_out"])
def test_step_loggers_are_named_after_the_step_module(step):
    module = cli.STEPS[step][0]
    assert importlib.import_module(module).log.name == module


@pytest.mark.parametrize("verbose", [True, False])
def test_debug_messages_show_with_v_under_python_m(config_file, sample_zip, verbose):
    """``python -m catdog.data.ingest`` logs as catdog.data.ingest, and its debug messages only with ``-v``."""
    result = subprocess.run(
        [sys.executable, "-m", "catdog.data.ingest", "--config", str(config_file)] + ["-v"] * verbose,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "INFO catdog.data.ingest:" in result.stderr
    assert ("DEBUG catdog.dirs: folder ready" in result.stderr) is verbose
    assert "__main__" not in result.stderr


def test_a_step_run_from_another_folder_finds_paths_beside_its_config(tmp_path, sample_zip, shipped_config):
    """``catdog ingest --config`` from elsewhere: the file's relative paths resolve against its folder."""
    project = tmp_path / "project"
    (project / "archives").mkdir(parents=True)
    shutil.copy(sample_zip, project / "archives" / "sample.zip")
    shipped_config["data"].update(
        archives={"pets": {"source_url": "archives/sample.zip", "sha256": None, "folder": "PetImages"}},
        download_dir="data/downloads",
        extract_dir="data/raw",
        artifacts_dir="artifacts",
    )
    shipped_config["model"] = {"dir": "model", "path": "model/model.h5"}
    (project / "config.yaml").write_text(yaml.safe_dump(shipped_config), encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    source = str(Path(catdog.__file__).resolve().parents[1])  # this checkout's src/, not another install
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(
        [sys.executable, "-m", "catdog.data.ingest", "--config", str(project / "config.yaml")],
        capture_output=True,
        text=True,
        cwd=elsewhere,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert (project / "data" / "downloads" / "sample.zip").is_file()
    assert (project / "data" / "raw" / "pets" / "PetImages" / "Cat" / "1.jpg").is_file()
    assert (project / "artifacts").is_dir() and (project / "model").is_dir()
    assert list(elsewhere.iterdir()) == []
