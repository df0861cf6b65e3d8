"""Leave-one-group-out on a tiny generated dataset: the held-out group is never trained on, and is scored."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from catdog import paths
from catdog.config import load_config
from catdog.errors import ModelError
from catdog.training import leave_one_out, results, train
from catdog.training.openset import SCORES
from helpers import TINY_OTHER_SOURCES, TINY_PER_CLASS

GROUPS = "data.source_groups={PetImages/flowers: plant, PetImages/lfw: person, PetImages/cars: object}"


def test_each_held_out_group_is_absent_from_training_and_present_in_the_score(
    tiny_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_config(tiny_run, [GROUPS, "training.architecture=resnet", "training.epochs=1"], environ={})
    from catdog.models import build_model

    init = Path(settings.model.dir) / "start.h5"
    results.save_h5_atomic(build_model(settings.training, 3), init)  # untrained: the runs' own training is tested

    trained_on: dict[str, dict[str, list[str]]] = {}
    real_fit = train.fit

    def recording_fit(settings, split, arrays, root, runs, resume, init_from):
        trained_on[runs.name] = {part: list(files) for part, files in split.files.items()}
        assert all(len(arrays[part]) == len(split.files[part]) for part in split.files)
        return real_fit(settings, split, arrays, root, runs, resume, init_from)

    monkeypatch.setattr(train, "fit", recording_fit)
    table = leave_one_out.leave_one_group_out(settings, init, pets_per_class=6)

    assert set(trained_on) == {"control", "plant", "person", "object"}
    assert set(table["held_out"]) == {"plant", "person", "object"}
    prefix = {"plant": "flowers_", "person": "lfw_", "object": "cars_"}
    others_per_source = TINY_PER_CLASS // len(TINY_OTHER_SOURCES)
    for group, row in table["held_out"].items():
        seen = trained_on[group]
        # Neither trained on nor used to choose the epoch: no photo of the group in train or validation.
        assert not [f for part in ("train", "validation") for f in seen[part] if prefix[group] in f]
        assert [f for f in trained_on["control"]["train"] if prefix[group] in f]  # the control had them
        # Scored on every photo of the group, from every part of the split.
        assert row["held_out_images"] == others_per_source
        assert row["held_out_flagged_by_source"].keys() == {f"PetImages/{prefix[group][:-1]}"}
        assert 0.0 <= row["held_out_flagged"] <= 1.0
        scores = np.load(paths.run_dir(settings.data.artifacts_dir, "leave-one-out") / group / "scores.npz")
        assert len(scores["held_out_logits"]) == len(scores["held_out_features"]) == others_per_source
    # Pets are subsampled to the asked number per class.
    cats = [f for f in trained_on["plant"]["train"] if "/Cat/" in f]
    assert len(cats) == 6
    assert set(table["control"]["test_flagged_by_group"]) == {"plant", "person", "object"}
    for group in table["held_out"]:
        rows = table["open_set"]["groups"][group]
        assert set(rows) == {"argmax", *SCORES, *(f"{name}+other_probability" for name in SCORES[1:])}
        for name in SCORES:
            assert 0.0 <= rows[name]["0.05"]["held_out_flagged"] <= 1.0
        assert rows["argmax"]["held_out_flagged"] == pytest.approx(table["held_out"][group]["held_out_flagged"])
        assert table["held_out_confidence"][group]["wrong_answers"] >= 0
    control = table["control_at_pet_loss"]
    assert set(control) == {f"{loss:g}" for loss in leave_one_out.PET_LOSSES}
    assert set(control["0.01"]["by_group"]) == {"plant", "person", "object"}
    assert "flagged at 1% pet loss" in leave_one_out.format_table(table)
    written = json.loads(paths.leave_one_out(settings.model.dir).read_text())
    assert written["held_out"] == table["held_out"]

    # The open-set tables can be redone from the kept scores alone.
    paths.leave_one_out(settings.model.dir).write_text(json.dumps({**written, "open_set": None}))
    assert leave_one_out.main(["--config", str(tiny_run), "--set", GROUPS, "--report"]) == 0
    assert json.loads(paths.leave_one_out(settings.model.dir).read_text())["open_set"] == table["open_set"]

    # A rerun of the same protocol resumes: nothing is trained again.
    trained_on.clear()
    again = leave_one_out.leave_one_group_out(settings, init, pets_per_class=6)
    assert trained_on == {}
    assert again["held_out"] == table["held_out"]

    # Scores lost (artifacts/ is not in git: a new machine): the table's reported rows stand in for them.
    runs = paths.run_dir(settings.data.artifacts_dir, "leave-one-out")
    (runs / "plant" / "scores.npz").unlink()
    (runs / "control" / "scores.npz").unlink()
    lost = leave_one_out.leave_one_group_out(settings, init, pets_per_class=6)
    assert trained_on == {}
    for key in ("held_out", "open_set", "held_out_confidence", "control_at_pet_loss"):
        assert lost[key] == again[key], key
    # Without those rows the run cannot be reported, and a rerun trains it again (and only it).
    table_file = paths.leave_one_out(settings.model.dir)
    written = json.loads(table_file.read_text())
    del written["open_set"]["groups"]["plant"]
    table_file.write_text(json.dumps(written))
    with pytest.raises(ModelError, match="--group plant"):
        leave_one_out.report(settings)
    retrained = leave_one_out.leave_one_group_out(settings, init, pets_per_class=6)
    assert set(trained_on) == {"plant"}
    assert set(retrained["open_set"]["groups"]) == {"plant", "person", "object"}

    # Another run seed: another sample of pets from the same split, in a runs folder and table of its own.
    first = trained_on.pop("plant")
    model_dir = Path(settings.model.dir) / "seed7"
    seeded = settings.model_copy(update={"model": settings.model.model_copy(update={"dir": str(model_dir)})})
    table = leave_one_out.leave_one_group_out(seeded, init, pets_per_class=6, groups=["plant"], seed=7)
    assert set(trained_on) == {"control", "plant"} and table["protocol"]["seed"] == 7
    assert trained_on["plant"]["validation"] == first["validation"]
    assert {f for f in trained_on["plant"]["train"] if "/Cat/" in f} != {f for f in first["train"] if "/Cat/" in f}
    assert (paths.run_dir(settings.data.artifacts_dir, "leave-one-out-seed7") / "plant" / "scores.npz").exists()
    assert json.loads(paths.leave_one_out(settings.model.dir).read_text())["held_out"].keys() == {
        "plant",
        "person",
        "object",
    }


def test_a_missing_v1_start_names_the_git_command_that_restores_it(config_file: Path, tmp_path: Path, capsys) -> None:
    """model/v1/ left the tree: asking for a v1 model that is absent says how to get it back, before any work."""
    from catdog import cli

    wanted = tmp_path / "artifacts" / "v1" / "inception.h5"
    argv = ["--config", str(config_file), "--init-from", str(wanted)]
    assert cli.run(leave_one_out.main, argv) == 1
    error = capsys.readouterr().err
    restore = f"mkdir -p {wanted.parent} && git show {paths.OLDER_MODELS['v1']}:model/v1/inception.h5 > {wanted}"
    assert error.strip() == f"error: no model file {str(wanted)!r}; the v1 models are kept in git history, " + (
        f"not in model/: restore this one with {restore}"
    )
    # Any other missing start is named alone.
    assert cli.run(leave_one_out.main, ["--config", str(config_file), "--init-from", str(tmp_path / "x.h5")]) == 1
    assert capsys.readouterr().err.strip() == f"error: no model file {str(tmp_path / 'x.h5')!r}"


def test_two_starts_of_one_architecture_are_refused_before_any_work(config_file: Path, tmp_path: Path, capsys) -> None:
    """Each member keeps its own folder, named by its architecture: two ResNets would overwrite each other."""
    from catdog import cli
    from catdog.models import build_model

    settings = load_config(config_file, ["training.architecture=resnet", "training.image_size=32"], environ={})
    start = tmp_path / "resnet.h5"
    results.save_h5_atomic(build_model(settings.training, 3), start)
    argv = ["--config", str(config_file), "--init-from", str(start), "--init-from", str(start)]
    assert cli.run(leave_one_out.main, argv) == 1
    assert capsys.readouterr().err.strip() == (
        "error: the starts of one run must be of different architectures, not resnet, resnet"
    )


def test_the_commit_named_for_the_v1_models_holds_them() -> None:
    import subprocess

    from catdog.config import PROJECT_ROOT

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)

    try:
        shallow = git("rev-parse", "--is-shallow-repository")
    except FileNotFoundError:
        pytest.skip("git is not installed")
    if shallow.returncode != 0 or shallow.stdout.strip() != "false":
        pytest.skip("not a git checkout with its whole history")
    commit = paths.OLDER_MODELS["v1"]
    for name in ("inception.h5", "inception.metrics.json", "resnet.h5", "resnet.metrics.json"):
        assert git("cat-file", "-e", f"{commit}:model/v1/{name}").returncode == 0, name


def test_with_refit_head_each_run_refits_its_head_on_its_own_training_part(
    tiny_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shipped recipe's head refit, per run: on that run's training part only, and its head is what is scored."""
    from catdog.models import build_model
    from catdog.training import head

    settings = load_config(
        tiny_run,
        [GROUPS, "training.architecture=resnet", "training.epochs=1", "training.head_refit.epochs=2"],
        environ={},
    )
    init, start = Path(settings.model.dir) / "start.h5", build_model(settings.training, 3)
    results.save_h5_atomic(start, init)

    trained_on: dict[str, int] = {}
    real_fit, real_refit = train.fit, head.refit_head
    refitted: list[tuple[int, np.ndarray]] = []

    def recording_fit(settings, split, arrays, root, runs, resume, init_from):
        trained_on[runs.name] = len(arrays["train"])
        return real_fit(settings, split, arrays, root, runs, resume, init_from)

    def recording_refit(model, images, labels, classes, training):
        facts = real_refit(model, images, labels, classes, training)
        refitted.append((len(images), model.get_layer("predictions").get_weights()[0].copy()))
        return facts

    monkeypatch.setattr(train, "fit", recording_fit)
    monkeypatch.setattr(head, "refit_head", recording_refit)
    table = leave_one_out.leave_one_group_out(settings, init, pets_per_class=6, groups=["plant"], refit_head=True)

    assert table["protocol"]["head_refit"] == settings.training.head_refit.model_dump()
    # Control first, then plant: each refit saw exactly its own run's training part.
    assert [n for n, _ in refitted] == [trained_on["control"], trained_on["plant"]]
    assert trained_on["plant"] < trained_on["control"]
    row = table["held_out"]["plant"]
    assert row["head_refit"]["pictures"]["photos"] == trained_on["plant"]
    # The scored logits are the refitted head's, over the kept features.
    scores = np.load(paths.run_dir(settings.data.artifacts_dir, "leave-one-out") / "plant" / "scores.npz")
    kernel = refitted[-1][1]
    assert not np.allclose(kernel, start.get_layer("predictions").get_weights()[0])
    logits = scores["held_out_logits"]
    spread = scores["held_out_features"] @ kernel
    np.testing.assert_allclose(logits - logits.mean(axis=0), spread - spread.mean(axis=0), rtol=1e-4, atol=1e-4)

    # A table written without the refit does not resume into one with it, and back.
    again = leave_one_out.leave_one_group_out(settings, init, pets_per_class=6, groups=["plant"])
    assert "head_refit" not in again["protocol"] and "head_refit" not in again["control"]


def test_with_two_starts_each_run_fine_tunes_both_members_and_scores_their_ensemble(
    tiny_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pair's protocol: a ResNet and an Inception per run, kept member by member, scored together."""
    from catdog.models import build_model

    settings = load_config(tiny_run, [GROUPS, "training.epochs=1", "training.head_refit.epochs=2"], environ={})
    starts = []
    for architecture in ("resnet", "inception"):
        training = settings.training.model_copy(update={"architecture": architecture})
        starts.append(Path(settings.model.dir) / f"{architecture}-start.h5")
        results.save_h5_atomic(build_model(training, 3), starts[-1])

    fitted: list[tuple[str, str, int]] = []
    real_fit = train.fit

    def recording_fit(settings, split, arrays, root, runs, resume, init_from):
        fitted.append((runs.parent.name, settings.training.architecture, len(arrays["train"])))
        assert runs.name == settings.training.architecture and Path(init_from).name.startswith(runs.name)
        return real_fit(settings, split, arrays, root, runs, resume, init_from)

    monkeypatch.setattr(train, "fit", recording_fit)
    table = leave_one_out.leave_one_group_out(settings, starts, pets_per_class=6, groups=["plant"], refit_head=True)

    assert [(run, architecture) for run, architecture, _ in fitted] == [
        ("control", "resnet"),
        ("control", "inception"),
        ("plant", "resnet"),
        ("plant", "inception"),
    ]
    assert fitted[2][2] == fitted[3][2] < fitted[0][2]  # both members of a run saw the same, smaller, training part
    assert table["protocol"]["init_from"] == [str(start) for start in starts]
    assert table["protocol"]["architecture"] == "resnet-inception"
    assert set(table["held_out"]["plant"]["member_train_seconds"]) == {"resnet", "inception"}
    runs = paths.run_dir(settings.data.artifacts_dir, "leave-one-out-resnet-inception")
    scores = np.load(runs / "plant" / "scores.npz")
    # The ensemble's pooled features are its members' side by side.
    widths = settings.training.resnet.stage_filters[-1] + sum(
        settings.training.inception.stages[-1][-1][i] for i in (0, 2, 4, 5)
    )
    assert scores["held_out_features"].shape[1] == widths
    assert not paths.run_dir(settings.data.artifacts_dir, "leave-one-out").exists()

    # A run stopped after its members resumes from them: asked again, nothing is fine-tuned.
    fitted.clear()
    again = leave_one_out.leave_one_group_out(settings, starts, pets_per_class=6, groups=["plant"], refit_head=True)
    assert fitted == []
    assert again["held_out"]["plant"]["held_out_images"] == table["held_out"]["plant"]["held_out_images"]
    # A member recorded with other settings is fine-tuned again; the other member is kept.
    record = runs / "plant" / "inception" / leave_one_out.MEMBER_RECORD
    record.write_text(record.read_text().replace('"learning_rate"', '"learning_rate_was"'))
    leave_one_out.leave_one_group_out(settings, starts, pets_per_class=6, groups=["plant"], refit_head=True)
    assert [(run, architecture) for run, architecture, _ in fitted] == [("plant", "inception")]


def test_the_control_is_judged_at_the_pet_loss_its_own_validation_pets_set() -> None:
    """Hand-made logits: the threshold sets 1 of 100 validation pets aside, and the seen Others are counted by group."""
    classes = ["Cat", "Dog", "Other"]

    def logits(other_scores) -> np.ndarray:
        # P(Other) rises with the score: 0 for Cat and Dog, the score for Other.
        return np.stack([np.zeros(len(other_scores)), np.zeros(len(other_scores)), np.asarray(other_scores)], axis=1)

    val_pets = np.linspace(-5.0, 0.0, 100)  # the highest pet (0.0) is the one set aside at 1%
    run = {
        "validation_logits": logits([*val_pets, 9.0, 9.0]),  # the two Others never move the threshold
        "validation_labels": np.array([0] * 50 + [1] * 50 + [2, 2]),
        "seen_other_test_logits": logits([1.0, -0.01, 0.5, -4.0]),
        "seen_other_test_groups": np.array(["plant", "plant", "object", "object"]),
        "test_pets_logits": logits([-6.0, 0.2, -1.0, -3.0]),
    }
    table = leave_one_out.control_at_pet_loss(run, classes)
    row = table["0.01"]
    # Over the second highest pet's -0.0505: 1.0, -0.01 and 0.5, not -4.0.
    assert row["seen_other_test_flagged"] == pytest.approx(3 / 4)
    assert row["by_group"] == {"object": 0.5, "plant": 1.0}
    assert row["test_pets_flagged"] == pytest.approx(1 / 4)
    # A larger pet loss lowers the threshold: never fewer flagged.
    assert table["0.05"]["seen_other_test_flagged"] >= row["seen_other_test_flagged"]
    del run["seen_other_test_groups"]
    assert "by_group" not in leave_one_out.control_at_pet_loss(run, classes)["0.01"]
