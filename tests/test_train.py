"""Training, resume, evaluate and predict on small generated data (never the real dataset)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from catdog import paths
from catdog.config import load_config
from catdog.data import dataset
from catdog.errors import DatasetError
from catdog.export import ship
from catdog.serving import predict
from catdog.training import compose, evaluate, loop, results, train
from helpers import (
    TINY_OTHER_SOURCES,
    copy_run,
    make_tiny_run,
    pattern_picture,
    read_shipped_config,
    write_test_config,
)
from helpers import TINY_PER_CLASS as PER_CLASS
from helpers import TINY_SIZE as SIZE


def _settings(config_file: Path, *overrides: str):
    return load_config(config_file, overrides, environ={})


@pytest.mark.parametrize("arch", ["inception", "resnet"])
def test_smoke_training_writes_a_model_that_loads_and_predicts(tiny_run: Path, arch: str):
    import keras

    settings = _settings(tiny_run, f"training.architecture={arch}")
    metrics = train.train(settings)
    model_file = Path(settings.model.dir) / f"{arch}.h5"
    assert model_file.exists()
    assert metrics["epochs_run"] == 2
    assert metrics["test"]["images"] > 0 and 0.0 <= metrics["test"]["accuracy"] <= 1.0
    saved = json.loads(model_file.with_suffix(".metrics.json").read_text())
    for key in ("accuracy", "precision", "recall", "f1", "roc_auc", "confusion_matrix"):
        assert key in saved["validation"] and key in saved["test"]
    assert saved["parameters"] == metrics["parameters"] > 0
    assert (
        saved["class_counts"]["train"]["Cat"]
        + saved["class_counts"]["test"]["Cat"]
        + saved["class_counts"]["validation"]["Cat"]
        == PER_CLASS
    )
    assert (model_file.parent / f"{arch}_curves.png").stat().st_size > 0
    assert (model_file.parent / f"{arch}_confusion.png").stat().st_size > 0

    model = keras.models.load_model(model_file, compile=False)
    probs = model.predict(np.zeros((1, SIZE, SIZE, 3), "float32"), verbose=0)
    assert probs.shape == (1, 3) and np.isclose(probs.sum(), 1.0, atol=1e-5)


def test_test_part_is_disjoint_and_stable(tiny_run: Path):
    settings = _settings(tiny_run)
    first, _, _ = dataset.prepare_split(settings)
    second, _, _ = dataset.prepare_split(settings)
    assert first == second
    parts = [set(first.files[p]) for p in ("train", "validation", "test")]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert sum(len(p) for p in parts) == 3 * PER_CLASS
    # Another seed would train on held-back photos: refused until the saved split is removed.
    reseeded = _settings(tiny_run, "training.seed=99")
    split_file = paths.split(reseeded.data.artifacts_dir)
    with pytest.raises(DatasetError, match="holds back"):
        dataset.prepare_split(reseeded)
    assert dataset.load_split(split_file) == first
    split_file.unlink()
    other, _, _ = dataset.prepare_split(reseeded)
    assert other.files["test"] != first.files["test"]


def test_resume_continues_after_an_interruption(tiny_run: Path, monkeypatch: pytest.MonkeyPatch):
    import keras

    settings = _settings(tiny_run, "training.epochs=3")
    real_logger = loop.epoch_logger

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    # The epoch logger is the last callback, after the backup: interrupt there.
    monkeypatch.setattr(loop, "epoch_logger", lambda *a: Interrupt())
    with pytest.raises(KeyboardInterrupt):
        train.train(settings)
    backup = paths.run_dir(settings.data.artifacts_dir, settings.training.architecture) / "backup"
    assert backup.exists()
    assert (
        len(
            train.read_history(
                paths.run_dir(settings.data.artifacts_dir, settings.training.architecture) / "history.csv"
            )["loss"]
        )
        == 2
    )

    monkeypatch.setattr(loop, "epoch_logger", real_logger)
    ran = []
    original_fit = keras.Model.fit

    def spying_fit(self, *args, **kwargs):
        history = original_fit(self, *args, **kwargs)
        ran.append(len(history.epoch))
        return history

    monkeypatch.setattr(keras.Model, "fit", spying_fit)
    metrics = train.train(settings, resume=True)
    assert ran == [1]  # only the third epoch was left
    assert metrics["epochs_run"] == 3
    # The resumed epoch took its rate from the same plan: the third of three, not the first.
    t = settings.training
    expected = [loop.learning_rate(e, 3, t.learning_rate, t.warmup_epochs) for e in range(3)]
    assert metrics["history"]["learning_rate"] == pytest.approx(expected)


def test_train_cli_reports_a_missing_manifest(tmp_path: Path, config_file: Path, capsys):
    from catdog import cli

    assert cli.run(train.main, ["--config", str(config_file)]) == 1
    assert "manifest" in capsys.readouterr().err


@pytest.fixture(scope="module")
def trained_once(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Inception trained once for this module: its whole run folder (training is the slow part)."""
    root = tmp_path_factory.mktemp("trained")
    config_file = make_tiny_run(write_test_config(root, read_shipped_config()))
    train.train(_settings(config_file))
    return root


@pytest.fixture
def trained(trained_once: Path, tmp_path: Path) -> tuple[Path, Path]:
    """``(config, model)`` of a private copy of :func:`trained_once`: tests ship, recalibrate and tune it in place."""
    root = copy_run(trained_once, tmp_path / "trained")
    return root / "config.yaml", root / "model" / "inception.h5"


def test_ship_installs_the_model_and_its_metrics(trained):
    config_file, model_file = trained
    settings = _settings(config_file)
    target = ship.ship(model_file, settings)
    assert target == Path(settings.model.path)
    assert target.read_bytes() == model_file.read_bytes()
    served = paths.served_model(target)
    assert paths.shipped_metrics(served).read_bytes() == model_file.with_suffix(".metrics.json").read_bytes()
    # The int8 twin was checked on the run's labelled validation part, whether or not it passed.
    check = json.loads(paths.litert_paths(served, "int8")[1].read_text())["check"]
    assert check["source"].startswith("validation split") and check["accuracy_float"] is not None


def test_ship_picks_the_best_model_on_the_validation_part(tmp_path: Path):
    for name, val, test in (("a", 0.91, 0.99), ("b", 0.95, 0.90)):
        (tmp_path / f"{name}.h5").write_bytes(b"model " + name.encode())
        (tmp_path / f"{name}.metrics.json").write_text(
            json.dumps({"validation": {"accuracy": val}, "test": {"accuracy": test}})
        )
    # "b" wins on validation even though "a" looks better on the test part.
    assert ship.best_by_validation(tmp_path) == tmp_path / "b.h5"
    with pytest.raises(ship.ModelError):
        ship.best_by_validation(tmp_path / "empty")


@pytest.mark.parametrize(("content", "message"), [("{not json", "cannot read the metrics"), ("{}", "no validation")])
def test_ship_says_what_is_wrong_with_a_damaged_metrics_file(tmp_path: Path, capsys, content: str, message: str):
    from catdog.cli import run

    (tmp_path / "a.h5").write_bytes(b"model")
    (tmp_path / "a.metrics.json").write_text(content)
    with pytest.raises(ship.ModelError, match=message):
        ship.best_by_validation(tmp_path)
    # The command says it in one line, not a traceback.
    assert run(ship.main, ["--set", f"model.dir={tmp_path}"]) == 1
    assert message in capsys.readouterr().err


def test_fine_tuning_starts_from_the_given_weights(trained, monkeypatch: pytest.MonkeyPatch):
    import keras

    config_file, model_file = trained
    settings = _settings(config_file, "training.epochs=1", "training.warmup_epochs=0")
    start = keras.models.load_model(model_file, compile=False).get_weights()
    seen = []
    original_fit = keras.Model.fit

    def checking_fit(self, *args, **kwargs):
        seen.append(all(np.array_equal(a, b) for a, b in zip(self.get_weights(), start, strict=True)))
        return original_fit(self, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "fit", checking_fit)
    metrics = train.train(settings, output=model_file.with_name("tuned.h5"), init_from=model_file)
    assert seen == [True]
    assert metrics["initialised_from"]["sha256"] == hashlib.sha256(model_file.read_bytes()).hexdigest()


def test_evaluate_cli_on_a_folder_and_on_the_test_part(trained, tmp_path: Path, capsys):
    config_file, model_file = trained
    settings = _settings(config_file)
    out = tmp_path / "eval.json"
    model_options = ["--config", str(config_file), "--model", str(model_file)]
    assert (
        evaluate.main(
            [*model_options, "--data", str(settings.data.archive_dir("petimages") / "PetImages"), "--output", str(out)]
        )
        == 0
    )
    report = json.loads(out.read_text())
    assert report["images"] == 3 * PER_CLASS
    assert sum(map(sum, report["confusion_matrix"]["rows_true_columns_predicted"])) == 3 * PER_CLASS
    assert "accuracy" in capsys.readouterr().out

    assert evaluate.main([*model_options, "--split", "test", "--low-resolution", "--output", str(out)]) == 0
    split = json.loads((Path(settings.data.artifacts_dir) / "split.json").read_text())
    report = json.loads(out.read_text())
    assert report["images"] == len(split["files"]["test"])
    assert sum(row["images"] for row in report["by_source"].values()) == report["images"]
    # No SOURCES.csv and no data.source_groups here: each photo's group is its class folder's.
    test_counts = {name.lower(): split["labels"]["test"].count(i) for i, name in enumerate(["Cat", "Dog", "Other"])}
    assert {group: row["images"] for group, row in report["by_group"].items()} == test_counts
    assert set(report["low_resolution"]) == {"16", "24", "32", "48", "64"}
    printed = capsys.readouterr().out
    assert "per source:" in printed and "per group:" in printed and "32 px" in printed


def test_evaluate_cli_fails_cleanly_on_a_missing_folder(trained, tmp_path: Path, capsys):
    from catdog import cli

    config_file, model_file = trained
    code = cli.run(
        evaluate.main, ["--config", str(config_file), "--model", str(model_file), "--data", str(tmp_path / "nowhere")]
    )
    assert code == 1
    assert "error:" in capsys.readouterr().err


def test_predict_cli_labels_good_files_and_reports_bad_ones(trained, tmp_path: Path, capsys):
    config_file, model_file = trained
    good = tmp_path / "cat.png"
    pattern_picture("Cat", 5).save(good)
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    missing = tmp_path / "missing.jpg"
    code = predict.main(["--config", str(config_file), "--model", str(model_file), str(bad), str(good), str(missing)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 1
    assert len(lines) == 3
    assert lines[0].startswith(f"{bad}: error:")
    assert lines[1].startswith(f"{good}: ") and any(name in lines[1] for name in ("Cat", "Dog", "Other"))
    assert lines[2].startswith(f"{missing}: error:")


def test_transfer_weights_widens_a_two_class_head(tmp_path: Path):
    """A v1 Cat/Dog model starts a Cat/Dog/Other one: same body, its two columns in the new head."""
    from catdog.config import load_config as load
    from catdog.models import build_model

    settings = load(
        None,
        [
            "training.image_size=32",
            "training.inception.stem_filters=8",
            "training.inception.stages=[[[4, 4, 8, 2, 4, 4]]]",
        ],
        environ={},
    )
    old = build_model(settings.training, 2)
    new = build_model(settings.training, 3)
    fresh_other = new.get_layer("predictions").get_weights()[0][:, 2].copy()
    copied = train.transfer_weights(old, new)
    assert copied == sum(1 for layer in new.layers if layer.get_weights())
    for layer in new.layers:
        if layer.name != "predictions":
            for a, b in zip(layer.get_weights(), old.get_layer(layer.name).get_weights(), strict=True):
                assert np.array_equal(a, b), layer.name
    kernel, bias = new.get_layer("predictions").get_weights()
    old_kernel, old_bias = old.get_layer("predictions").get_weights()
    assert np.array_equal(kernel[:, :2], old_kernel) and np.array_equal(bias[:2], old_bias)
    assert np.array_equal(kernel[:, 2], fresh_other)


def test_low_resolution_images_go_through_the_app_preprocessing(tmp_path: Path):
    """Shrink with the app's resize, then upscale as an uploaded thumbnail would be."""
    from catdog.serving.preprocess import load_image, resize_image

    path = tmp_path / "photo.png"
    pattern_picture("Cat", 3).save(path)
    made = evaluate.low_resolution_images([path], 16, SIZE)
    small = load_image(str(path), 16)
    expected = resize_image(Image.fromarray(small), SIZE)
    assert made.shape == (1, SIZE, SIZE, 3) and np.array_equal(made[0], expected)
    # A 16 px thumbnail carries less detail than the image itself.
    full = load_image(str(path), SIZE).astype(float)
    assert np.abs(np.diff(made[0].astype(float), axis=1)).mean() < np.abs(np.diff(full, axis=1)).mean()

    def predict(images):
        # A fake model: "Cat" when the picture is bright in the middle.
        centre = images[:, SIZE // 4 : 3 * SIZE // 4, SIZE // 4 : 3 * SIZE // 4].mean(axis=(1, 2, 3))
        return np.stack([centre > 100, centre <= 100, np.zeros(len(images), bool)], axis=1).astype(float)

    report = evaluate.low_resolution_report(
        predict, [path, path], [0, 1], SIZE, ["Cat", "Dog", "Other"], sides=(16, 24)
    )
    assert set(report) == {"16", "24"}
    assert report["16"]["accuracy"] == 0.5 and report["16"]["pets_answered_other"] == 0.0


def test_recalibrate_refits_the_calibration_without_training(trained, capsys):
    config_file, model_file = trained
    before = json.loads(model_file.with_suffix(".metrics.json").read_text())
    weights = model_file.read_bytes()
    assert train.main(["--config", str(config_file), "--recalibrate", str(model_file)]) == 0
    after = json.loads(model_file.with_suffix(".metrics.json").read_text())
    assert model_file.read_bytes() == weights
    assert after["model_sha256"] == before["model_sha256"] and after["history"] == before["history"]
    assert len(after["calibration"]["class_bias"]) == 3 and after["calibration"]["class_bias"][1:] == [0.0, 0.0]
    assert after["test"]["images"] == before["test"]["images"]
    assert "calibration" in capsys.readouterr().out
    other = model_file.with_name("other.h5")
    other.write_bytes(weights + b"x")
    other.with_suffix(".metrics.json").write_text(json.dumps(before))
    with pytest.raises(train.ModelError, match="another model file"):
        results.recalibrate(_settings(config_file), other)


def test_a_pet_budget_counts_full_size_pets_only(tmp_path: Path):
    settings = load_config(None, ["training.augmentation.low_res_sides=[16,96]"], environ={})
    sides = {"big_cat.png": 200, "small_cat.png": 64, "small_other.png": 40, "big_other.png": 300}
    for name, side in sides.items():
        Image.new("RGB", (side + 10, side), (120, 90, 60)).save(tmp_path / name)
    counted = results._budget_counts(settings, tmp_path, list(sides), [0, 1, 2, 2], 2)
    assert counted.tolist() == [True, False, False, True]
    # No full-size pet at all (a tiny generated dataset): every pet counts.
    assert results._budget_counts(settings, tmp_path, list(sides)[1:], [1, 2, 2], 2) is None


# Solid colours whose channels a fake model reads as the probabilities of Cat, Dog and Other.
_CAT, _CAT_LIKE_OTHER, _DOG, _OTHER = (200, 30, 25), (90, 20, 130), (30, 200, 25), (20, 20, 200)
_PART = [(_CAT, 0)] * 16 + [(_CAT_LIKE_OTHER, 0)] * 4 + [(_DOG, 1)] * 10 + [(_OTHER, 2)] * 10


def _colour_model(model, images, batch_size=128):
    means = np.asarray(images, dtype=np.float64).mean(axis=(1, 2)) + 1.0
    return (means / means.sum(axis=1, keepdims=True)).astype(np.float32)


def _score_colours(tmp_path: Path, *overrides: str):
    settings = load_config(None, ["training.augmentation.low_res_sides=[16,96]", *overrides], environ={})
    files, labels = {}, {}
    for part in ("validation", "test"):
        files[part], labels[part] = [], []
        for i, (colour, label) in enumerate(_PART):
            name = f"PetImages/{('Cat', 'Dog', 'Other')[label]}/{part}{i}.png"
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (120, 110), colour).save(tmp_path / name)  # full size: the budget counts it
            files[part].append(name)
            labels[part].append(label)
    split = dataset.Split(("Cat", "Dog", "Other"), {**files, "train": []}, {**labels, "train": []})
    size = settings.training.image_size
    arrays = {part: np.stack([np.full((size, size, 3), c, np.uint8) for c, _ in _PART]) for part in files}
    return results.score(settings, None, split, arrays, tmp_path, "colours")


def test_a_pet_budget_is_a_decision_bias_that_leaves_the_calibration_alone(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(results, "predict_in_batches", _colour_model)
    free, free_calibration, free_low_res = _score_colours(tmp_path, "training.max_pets_as_other=null")
    reports, calibration, low_res = _score_colours(tmp_path, "training.max_pets_as_other=0.0")
    assert free_calibration["decision_bias"] == [0.0, 0.0, 0.0]
    # The budget is only in the decision: the calibrated probabilities are those without it.
    assert calibration["temperature"] == free_calibration["temperature"]
    assert calibration["class_bias"] == free_calibration["class_bias"] == [0.0, 0.0, 0.0]
    assert calibration["decision_bias"][:2] == [0.0, 0.0] and calibration["decision_bias"][2] < 0.0
    assert "decision" in calibration["method"] and "leaves the probabilities" in calibration["method"]
    # Every figure judges the answers the decision bias gives: the four Other-looking cats are answered Cat.
    for part in ("validation", "test"):
        free_matrix = np.array(free[part]["confusion_matrix"]["rows_true_columns_predicted"])
        matrix = np.array(reports[part]["confusion_matrix"]["rows_true_columns_predicted"])
        assert free_matrix[0, 2] == 4 and matrix[0, 2] == 0 and matrix[2, 2] == 10
        assert reports[part]["by_source"]["PetImages"]["answered_other"] == pytest.approx(10 / 40)
    assert free_low_res["64"]["pets_answered_other"] == pytest.approx(4 / 30)
    assert low_res["64"]["pets_answered_other"] == 0.0
    # The reliability bins the answer's own probability: the Other-looking cats sit under 0.5, right.
    assert calibration["test_after"] != free_calibration["test_after"]
    assert sum(b["count"] for b in calibration["test_after"]["bins"] if b["high"] <= 0.5) == 4


def test_recalibrating_with_a_pet_budget_moves_the_other_boundary(trained):
    config_file, model_file = trained
    assert (
        train.main(
            ["--config", str(config_file), "--recalibrate", str(model_file), "--set", "training.max_pets_as_other=0.0"]
        )
        == 0
    )
    after = json.loads(model_file.with_suffix(".metrics.json").read_text())
    calibration = after["calibration"]
    assert "decision offset of the Other log-probability" in calibration["method"]
    # No validation cat or dog is answered Other any more, whatever the tiny model learnt.
    matrix = np.array(after["validation"]["confusion_matrix"]["rows_true_columns_predicted"])
    assert matrix[:2, 2].sum() == 0 and calibration["decision_bias"][2] <= 0.0
    assert calibration["class_bias"][2] == 0.0


def test_a_run_trained_from_a_pack_is_adopted_with_its_record(tiny_run: Path, tmp_path: Path):
    from catdog.data import pack
    from catdog.training import train_pack

    packed = tmp_path / "pack"
    assert pack.main(["--config", str(tiny_run), str(packed), "--quality", "90", "--validation-images", "6"]) == 0
    spec = json.loads((packed / "spec.json").read_text())
    assert spec["image_size"] == SIZE and spec["parts"] == ["train", "validation"]
    runs = tmp_path / "runs"
    assert (
        train_pack.main(
            [str(packed), "--out", str(runs), "--architecture", "resnet", "--minutes", "5", "--max-epochs", "2"]
        )
        == 0
    )
    record = json.loads((runs / "resnet.run.json").read_text())
    assert record["epochs_run"] == 2 and len(record["history"]["val_accuracy"]) == 2
    assert record["settings"]["architecture"] == "resnet" and record["settings"]["mixed_precision"] is False
    assert record["history"]["learning_rate"][0] == pytest.approx(record["settings"]["learning_rate"] / 10)

    assert train.main(["--config", str(tiny_run), "--set", "training.architecture=resnet", "--adopt", str(runs)]) == 0
    settings = _settings(tiny_run)
    model_file = Path(settings.model.dir) / "resnet.h5"
    metrics = json.loads(model_file.with_suffix(".metrics.json").read_text())
    assert metrics["hardware"] == record["hardware"] and metrics["epochs_run"] == 2
    assert metrics["trained_from_pack"]["pack"]["split_sha256"] == spec["split_sha256"]
    # Stratified by class and source: a tenth of each pet class, and one of each Other source's eight photos.
    others_per_source = PER_CLASS // len(TINY_OTHER_SOURCES)
    assert metrics["test"]["images"] == 2 * round(PER_CLASS * 0.1) + len(TINY_OTHER_SOURCES) * max(
        1, round(others_per_source * 0.1)
    )
    # The adopted file holds the pack run's weights, not a fresh network.
    import keras

    from catdog.models import build_model

    expected = build_model(settings.training.model_copy(update={"architecture": "resnet"}), 3)
    expected.load_weights(str(runs / "resnet.weights.h5"))
    adopted = keras.models.load_model(model_file, compile=False)
    for a, b in zip(adopted.get_weights(), expected.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)

    # A run packed from another split is refused.
    record["pack"]["split_sha256"] = "0" * 64
    (runs / "resnet.run.json").write_text(json.dumps(record))
    with pytest.raises(train.ModelError, match="another split"):
        train.main(["--config", str(tiny_run), "--set", "training.architecture=resnet", "--adopt", str(runs)])


def test_both_entry_points_train_in_the_one_loop(tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """train (tf.data) and train_pack (arrays, on any backend) with the same settings: same rates, same shrinking."""
    from catdog.data import pack
    from catdog.training import train_pack

    # The tiny photos are 40-89 px: with 64 px as the top of the range, some are natively small and some not.
    sides = "training.augmentation.low_res_sides=[16, 64]"
    fits, shares = [], {}
    real_fit, real_tf_dataset = loop.fit, train.tf_dataset

    def spying_fit(model, training, plan, images, callbacks=(), **data):
        fits.append(plan.epochs)
        if isinstance(data["x"], dict):
            shares["pack"] = data["x"]["low_res_share"]
        return real_fit(model, training, plan, images, callbacks, **data)

    def spying_tf_dataset(*args):
        if len(args) > 8:  # the training part's, with its low-resolution shares
            shares["train"] = args[8]
        return real_tf_dataset(*args)

    monkeypatch.setattr(loop, "fit", spying_fit)
    monkeypatch.setattr(train, "tf_dataset", spying_tf_dataset)
    packed, runs = tmp_path / "pack", tmp_path / "runs"
    assert pack.main(["--config", str(tiny_run), "--set", sides, str(packed), "--validation-images", "6"]) == 0
    assert train_pack.main([str(packed), "--out", str(runs), "--minutes", "5", "--max-epochs", "2"]) == 0
    record = json.loads((runs / "inception.run.json").read_text())
    metrics = train.train(_settings(tiny_run, sides), output=tmp_path / "cpu.h5")

    assert fits == [2, 2]
    t = _settings(tiny_run).training
    expected = [loop.learning_rate(e, 2, t.learning_rate, t.warmup_epochs) for e in range(2)]
    assert record["history"]["learning_rate"] == pytest.approx(expected)
    assert metrics["history"]["learning_rate"] == pytest.approx(expected)
    # Each training image has the same chance of being shrunk, from the sides the pack carried or the files.
    assert len(set(shares["train"].tolist())) > 1
    np.testing.assert_array_equal(shares["pack"], shares["train"])


def test_other_weights_reach_the_loss_by_group_and_a_pack_refuses_them(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from catdog.data import pack

    chosen = ["data.source_groups={PetImages/flowers: plant}", "training.other_weights.groups={plant: 3}"]
    seen = {}
    real_tf_dataset = train.tf_dataset

    def spying_tf_dataset(*args):
        if len(args) > 7:  # the training part's, with its sample weights
            seen["labels"], seen["weights"] = np.asarray(args[1]), np.asarray(args[7])
        return real_tf_dataset(*args)

    monkeypatch.setattr(train, "tf_dataset", spying_tf_dataset)
    settings = _settings(tiny_run, *chosen, "training.epochs=1")
    train.train(settings, output=tmp_path / "weighted.h5")

    split, _, _ = dataset.prepare_split(settings)
    real = len(split.files["train"])
    labels, weights = seen["labels"], seen["weights"]
    flowers = np.array(["/Other/flowers_" in f for f in split.files["train"]] + [False] * (len(labels) - real))
    others = (labels == 2) & ~flowers
    assert flowers.any() and others.any()
    np.testing.assert_allclose(weights[flowers], 3 * weights[others][0], rtol=1e-6)
    # The Other class keeps the total it would have with every photo alike; cats and dogs are untouched.
    plain = dataset.class_weights(split.labels["train"], 3, settings.training.class_weight_power)
    assert weights[labels == 2].sum() == pytest.approx(plain[2] * (labels == 2).sum(), rel=1e-5)
    np.testing.assert_allclose(weights[labels == 0], plain[0], rtol=1e-6)

    sets = [item for value in chosen for item in ("--set", value)]
    with pytest.raises(SystemExit):
        pack.main(["--config", str(tiny_run), *sets, str(tmp_path / "pack")])
    assert not (tmp_path / "pack").exists()


def test_average_interpolates_two_models_in_weight_space(trained, tmp_path: Path):
    import keras

    config_file, model_file = trained
    settings = _settings(config_file)
    other = keras.models.load_model(model_file, compile=False)
    shifted = [w + 1.0 for w in other.get_weights()]
    other.set_weights(shifted)
    second = model_file.with_name("second.h5")
    other.save(second)
    out = tmp_path / "soup.h5"
    metrics = compose.average(settings, model_file, second, 0.25, out)
    first_weights = keras.models.load_model(model_file, compile=False).get_weights()
    soup = keras.models.load_model(out, compile=False).get_weights()
    for a, b in zip(first_weights, soup, strict=True):
        np.testing.assert_allclose(b, a + 0.25, rtol=1e-5, atol=1e-5)
    assert metrics["averaged"]["share_of_second"] == 0.25
    assert metrics["averaged"]["second"]["sha256"] == hashlib.sha256(second.read_bytes()).hexdigest()
    first_metrics = json.loads(model_file.with_suffix(".metrics.json").read_text())
    assert metrics["history"] == first_metrics["history"]
    assert metrics["test"]["images"] == first_metrics["test"]["images"]

    resnet = tmp_path / "resnet.h5"
    from catdog.models import build_model

    build_model(settings.training.model_copy(update={"architecture": "resnet"}), 3).save(resnet)
    with pytest.raises(train.ModelError, match="do not share an architecture"):
        compose.average(settings, model_file, resnet, 0.5, out)
    with pytest.raises(train.ModelError, match="between 0 and 1"):
        compose.average(settings, model_file, second, 1.5, out)


def test_ensemble_of_a_model_with_itself_scores_like_the_model(trained, tmp_path: Path, capsys):
    config_file, model_file = trained
    out = tmp_path / "ensemble.h5"
    args = ["--config", str(config_file), "--ensemble", str(model_file), str(model_file), "--output", str(out)]
    assert train.main(args) == 0
    printed = capsys.readouterr().out
    assert "(ensemble)" in printed
    assert "ensemble on the validation part" in printed and "ensemble on the test part" in printed
    metrics = json.loads(out.with_suffix(".metrics.json").read_text())
    single = json.loads(model_file.with_suffix(".metrics.json").read_text())
    assert metrics["architecture"] == "ensemble" and metrics["epochs_run"] == 0 and metrics["history"] == {}
    assert [m["sha256"] for m in metrics["members"]] == [single["model_sha256"]] * 2
    assert metrics["members"][0]["validation_accuracy"] == single["validation"]["accuracy"]
    # The same network twice: logits averaged are its logits, so every answer is the same.
    assert metrics["test"]["confusion_matrix"] == single["test"]["confusion_matrix"]
    assert not out.with_name("ensemble_curves.png").exists() and out.with_name("ensemble_confusion.png").exists()
    with pytest.raises(train.ModelError, match="cannot read the metrics"):
        compose.ensemble(_settings(config_file), [model_file, tmp_path / "missing.h5"], out)


def test_an_ensemble_with_a_refitted_head_says_how_it_was_fitted(trained, tmp_path: Path):
    import keras

    config_file, model_file = trained
    out = tmp_path / "refitted.h5"
    args = ["--config", str(config_file), "--ensemble", str(model_file), str(model_file), "--output", str(out)]
    assert train.main([*args, "--refit-head", "--set", "training.head_refit.plain_pictures=5"]) == 0
    metrics = json.loads(out.with_suffix(".metrics.json").read_text())
    synthetic = _settings(config_file).training.synthetic_other
    assert metrics["head_refit"]["pictures"] == {
        "photos": sum(metrics["class_counts"]["train"].values()),
        "generated": synthetic,
        "plain": 5,
    }
    assert metrics["settings"]["head_refit"]["plain_pictures"] == 5
    member = keras.models.load_model(model_file, compile=False).get_layer("predictions").get_weights()
    refitted = keras.models.load_model(out, compile=False).get_layer("predictions").get_weights()
    assert not np.allclose(refitted[0], np.concatenate([member[0]] * 2) / 2)  # not the averaged heads
    with pytest.raises(SystemExit):
        train.main(["--config", str(config_file), "--refit-head"])


def test_a_composed_model_is_scored_with_this_checkouts_calibration_choices():
    """Members recorded their training settings; the pet budget and recall balance are fitted when scoring, now."""
    settings = load_config(
        environ={}, overrides=["training.max_pets_as_other=0.02", "training.balance_recall=[Cat, Dog]"]
    )
    recorded = settings.training.model_dump()
    recorded.update(architecture="resnet", learning_rate=0.123, max_pets_as_other=None, balance_recall=[])
    composed = compose.with_recorded_training(settings, recorded)
    assert composed.training.architecture == "resnet" and composed.training.learning_rate == 0.123
    assert composed.training.max_pets_as_other == 0.02
    assert list(composed.training.balance_recall) == ["Cat", "Dog"]


def test_a_step_never_overwrites_the_model_it_reads(tiny_run: Path, tmp_path: Path):
    """Fine-tuning, blending or combining a model with the default output must not replace that model."""
    from catdog.errors import ModelError

    settings = _settings(tiny_run, "training.architecture=resnet")
    committed = Path(settings.model.dir) / "resnet.h5"  # the default output of a ResNet step
    committed.parent.mkdir(parents=True, exist_ok=True)
    committed.write_bytes(b"a committed model")
    paths.trained_metrics(committed).write_text(json.dumps({"architecture": "resnet"}))
    other = tmp_path / "tuned.h5"
    with pytest.raises(ModelError, match="would be overwritten"):
        train.train(settings, init_from=committed)
    with pytest.raises(ModelError, match="would be overwritten"):
        compose.average(settings, committed, other, 0.5)
    with pytest.raises(ModelError, match="would be overwritten"):
        compose.ensemble(settings, [other, committed], output=committed.parent / ".." / "model" / "resnet.h5")
    assert committed.read_bytes() == b"a committed model"
