"""Tests for catdog.export.release: a shipped model, its metrics and its twins change together or not at all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from catdog.export import release
from catdog.paths import litert_paths, served_model, shipped_metrics


def release_files(tag: str) -> dict[str, bytes]:
    """A model and every companion, each saying which release it belongs to."""
    return {
        "model.h5": f"model {tag}".encode(),
        "metrics.json": json.dumps({"release": tag}).encode(),
        "model.tflite": f"float twin {tag}".encode(),
        "model.tflite.json": json.dumps({"release": tag}).encode(),
        "model.int8.tflite": f"int8 twin {tag}".encode(),
        "model.int8.tflite.json": json.dumps({"release": tag}).encode(),
    }


def served_release(target: Path) -> str:
    """Which release the app would serve, read as the app reads it; fails on a mix."""
    model = served_model(target)
    tags = {
        model.read_text().split()[-1],
        json.loads(shipped_metrics(model).read_text())["release"],
        *(json.loads(litert_paths(model, precision)[1].read_text())["release"] for precision in ("float", "int8")),
        *(litert_paths(model, precision)[0].read_text().split()[-1] for precision in ("float", "int8")),
    }
    assert len(tags) == 1, f"a mix of releases is served: {tags}"
    return tags.pop()


def test_install_points_the_link_at_a_complete_release(tmp_path):
    target = tmp_path / "model" / "model.h5"
    first = release.install(target, release_files("A"))
    assert target.is_symlink() and not os.path.isabs(os.readlink(target))  # relative: the repository can move
    assert served_model(target) == first / "model.h5" and release.current(target) == first
    assert served_release(target) == "A"
    assert sorted(path.name for path in first.iterdir()) == sorted(release_files("A"))

    second = release.install(target, release_files("B"))
    assert served_release(target) == "B" and first.exists()  # the previous release stays for workers reading it
    third = release.install(target, release_files("C"))
    assert served_release(target) == "C"
    assert sorted(path.name for path in third.parent.iterdir()) == sorted([second.name, third.name])


def test_install_needs_the_model_itself(tmp_path):
    with pytest.raises(ValueError, match="must hold 'model.h5'"):
        release.install(tmp_path / "model.h5", {"metrics.json": b"{}"})
    assert not (tmp_path / "model.h5").exists()


def test_install_replaces_the_older_layout_of_files_beside_the_model(tmp_path):
    target = tmp_path / "model.h5"
    for name, content in release_files("old").items():
        (tmp_path / name).write_bytes(content)
    release.install(target, release_files("new"))
    assert served_release(target) == "new"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.h5", "releases"]


# Install release B over release A, dying (SIGKILL: no cleanup runs) just before the K-th file operation.
KILLED_INSTALL = """
import json, os, shutil, signal, sys
from pathlib import Path
from catdog.export import release

target, files, kill_at = Path(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])
calls = 0

def dying(module, name):
    original = getattr(module, name)

    def call(*args, **kwargs):
        global calls
        calls += 1
        if calls == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)

    setattr(module, name, call)

for name in ("rename", "replace", "symlink", "chmod", "fsync", "unlink"):
    dying(os, name)
dying(shutil, "rmtree")
dying(Path, "write_bytes")
release.install(target, {name: content.encode() for name, content in files.items()})
print("completed after", calls, "operations")
"""


def test_a_ship_killed_at_any_step_serves_the_old_release_or_the_new_one(tmp_path):
    files_b = json.dumps({name: content.decode() for name, content in release_files("B").items()})
    outcomes = []
    for kill_at in range(1, 100):
        target = tmp_path / str(kill_at) / "model.h5"
        release.install(target, release_files("A"))
        run = subprocess.run(
            [sys.executable, "-c", KILLED_INSTALL, str(target), files_b, str(kill_at)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        served = served_release(target)
        outcomes.append(served)
        if run.returncode == 0:
            assert "completed" in run.stdout and served == "B"
            break
        assert run.returncode == -9, run.stderr  # killed, not failed
        # The next ship cleans up whatever the killed one left and installs completely.
        release.install(target, release_files("C"))
        assert served_release(target) == "C"
        assert len(list(target.parent.joinpath("releases").iterdir())) <= 2
        assert sorted(path.name for path in target.parent.iterdir()) == ["model.h5", "releases"]
    else:
        pytest.fail("the install never completed")
    # Every step was a possible crash point; the switch happened at exactly one of them.
    assert len(outcomes) > 10 and "A" in outcomes and outcomes[-1] == "B"
    switch = outcomes.index("B")
    assert set(outcomes[:switch]) == {"A"} and set(outcomes[switch:]) == {"B"}
