"""catdog classify: sources, one row per file with the API's error codes, the table's formats, resuming."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from catdog import cli
from catdog.bulk import classify
from catdog.bulk.job import run_job
from catdog.bulk.replica import ReplicaSpec, read_file
from catdog.bulk.sources import list_files
from catdog.bulk.table import PartStore, read_table, schema, to_table, write_table
from catdog.errors import DatasetError, InvalidImage, JobError
from catdog.serving.inference import Predictor
from catdog.serving.preprocess import ImageLimits
from helpers import CLASSES, make_collection, make_photo

# The documented columns, in order, for the classes Cat, Dog and Other.
COLUMNS = [
    "path",
    "label",
    "confidence",
    "p_Cat",
    "p_Dog",
    "p_Other",
    "model_version",
    "error_code",
    "error_message",
]


@pytest.fixture(scope="module")
def spec(three_class_model_path) -> ReplicaSpec:
    """The tiny three-class model with the test config's limits (min_side 8)."""
    limits = ImageLimits(min_side=8, accepted_formats=("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF"))
    return ReplicaSpec(str(three_class_model_path), CLASSES, limits, max_file_bytes=10 << 20)


@pytest.fixture(scope="module")
def replica(spec):
    return spec.load()


class InProcess:
    """An engine running a real replica in the test process, a batch at a time, that can be stopped like Ctrl-C."""

    name = "in-process"

    def __init__(self, replica, batch_size: int = 2, stop_after: int | None = None):
        self.replica = replica
        self.batch_size = batch_size
        self.stop_after = stop_after
        self.seen: list[str] = []

    def classify(self, paths):
        for number, start in enumerate(range(0, len(paths), self.batch_size)):
            if number == self.stop_after:
                raise KeyboardInterrupt
            batch = paths[start : start + self.batch_size]
            self.seen.extend(batch)
            yield self.replica.classify(batch)


def _job(files, output, engine, replica, **options):
    return run_job(
        files,
        output,
        engine,
        classes=CLASSES,
        model_version=replica.model_version,
        part_files=options.pop("part_files", 4),
        **options,
    )


def _rows(path: Path) -> list[dict]:
    return read_table(path, CLASSES).to_pylist()


def _assert_same_rows(got: list[dict], expected: list[dict]) -> None:
    """The same files, labels and errors; probabilities equal up to float noise of a different batching."""
    assert [row["path"] for row in got] == [row["path"] for row in expected]
    for a, b in zip(got, expected, strict=True):
        for column in COLUMNS:
            if column in ("confidence", "p_Cat", "p_Dog", "p_Other") and a[column] is not None:
                assert a[column] == pytest.approx(b[column], abs=1e-6), (a["path"], column)
            else:
                assert a[column] == b[column], (a["path"], column)


# --- sources -----------------------------------------------------------------


def test_sources_walk_folders_expand_globs_and_read_list_files(tmp_path, monkeypatch):
    photos = tmp_path / "photos"
    for name in ("a.jpg", "b.png", "deep/c.jpg", ".hidden.jpg", ".cache/d.jpg", "notes.txt"):
        (photos / name).parent.mkdir(parents=True, exist_ok=True)
        (photos / name).write_bytes(b"x")
    listing = tmp_path / "list.txt"
    listing.write_text("# chosen ones\nphotos/a.jpg\n\n  photos/missing.jpg  \n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)

    walked = list_files([photos])
    assert walked == sorted(str(photos / name) for name in ("a.jpg", "b.png", "deep/c.jpg", "notes.txt"))
    assert list_files([str(photos / "**" / "*.jpg")]) == [str(photos / "a.jpg"), str(photos / "deep/c.jpg")]
    # Relative to the current folder; a listed file that is missing keeps its place (its row will say so).
    assert list_files([listing]) == [str(photos / "a.jpg"), str(photos / "missing.jpg")]
    assert list_files([photos, "photos/a.jpg", listing]) == sorted({*walked, str(photos / "missing.jpg")})
    assert list_files([photos], exclude=[photos / "deep", photos / "b.png"]) == [
        str(photos / "a.jpg"),
        str(photos / "notes.txt"),
    ]


@pytest.mark.parametrize(("source", "message"), [("nowhere", "does not exist"), ("photos/*.gif", "matches no file")])
def test_missing_sources_are_refused(tmp_path, monkeypatch, source, message):
    (tmp_path / "photos").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetError, match=message):
        list_files([source])


# --- rows --------------------------------------------------------------------


def test_every_file_gets_one_row_with_the_api_codes_and_the_predictors_labels(
    tmp_path, config_file, settings, three_class_model_path, capsys, monkeypatch
):
    expected = make_collection(tmp_path / "photos")
    output = tmp_path / "photos" / "predictions.parquet"  # inside a source: never classified itself
    argv = ["photos", "--output", str(output), "--config", str(config_file), "--model", str(three_class_model_path)]
    monkeypatch.chdir(tmp_path)
    assert classify.main([*argv, "--workers", "2"]) == 0

    rows = pq.read_table(output).to_pylist()
    assert [row["path"] for row in rows] == sorted(str(tmp_path / "photos" / name) for name in expected)
    predictor = Predictor.from_settings(settings, three_class_model_path)  # as the API loads it
    for row in rows:
        name = str(Path(row["path"]).relative_to(tmp_path / "photos"))
        assert row["error_code"] == expected[name], name
        assert row["model_version"] == predictor.short_hash
        data = Path(row["path"]).read_bytes()
        if expected[name] is None:
            (prediction,) = predictor.predict_bytes([data])
            assert (row["label"], row["error_message"]) == (prediction.label, None)
            assert row["confidence"] == pytest.approx(prediction.confidence, abs=1e-6)
            assert [row[f"p_{name}"] for name in CLASSES] == pytest.approx(
                [prediction.probabilities[name] for name in CLASSES], abs=1e-6
            )
        else:
            # The API refuses the same upload with the same code and message.
            with pytest.raises(InvalidImage) as refused:
                predictor.predict_bytes([data])
            assert (row["error_code"], row["error_message"]) == (refused.value.reason, refused.value.message)
            assert row["label"] is row["confidence"] is row["p_Cat"] is None

    out = capsys.readouterr().out
    assert f"classified {len(expected)} file(s)" in out and "images/s" in out
    assert re.search(r"error not_image +2\n", out) and re.search(r"error too_large +1\n", out)
    assert not PartStore(output, CLASSES).folder.exists()


def test_unreadable_and_oversized_files_get_a_row(tmp_path, replica):
    folder = tmp_path / "photos"
    folder.mkdir()
    big = folder / "big.jpg"
    big.write_bytes(make_photo(seed=1))
    rows = replica.classify([str(folder / "gone.jpg"), str(folder), str(big)])
    assert [row["error_code"] for row in rows] == ["unreadable", "unreadable", None]
    assert "No such file" in rows[0]["error_message"]
    with pytest.raises(InvalidImage, match="more than the limit of 100 bytes") as refused:
        read_file(big, 100)
    assert refused.value.reason == "too_large"


def test_rows_answer_by_the_models_decision_bias_as_the_api_does(tmp_path, replica, monkeypatch):
    paths = []
    for seed in range(4):
        paths.append(tmp_path / f"{seed}.jpg")
        paths[-1].write_bytes(make_photo(seed=seed))
    plain = replica.classify([str(p) for p in paths])
    bias = [0.0] * len(CLASSES)
    bias[CLASSES.index(plain[0]["label"])] = -50.0  # never the first photo's top class
    monkeypatch.setattr(replica.predictor, "decision_bias", tuple(bias))
    rows = replica.classify([str(p) for p in paths])
    answers = replica.predictor.predict_bytes([p.read_bytes() for p in paths])
    assert rows[0]["label"] != plain[0]["label"]
    for row, answer in zip(rows, answers, strict=True):
        assert (row["label"], row["confidence"]) == (answer.label, pytest.approx(answer.confidence, abs=1e-6))
        assert row["confidence"] == pytest.approx(row[f"p_{row['label']}"])


# --- formats -----------------------------------------------------------------


def _sample_table():
    rows = [
        {"path": "/p/é cat, \"quoted\".jpg", "label": "Cat", "confidence": 0.7, "p_Cat": 0.7, "p_Dog": 0.2,
         "p_Other": 0.1, "model_version": "abc", "error_code": None, "error_message": None},
        {"path": "/p/empty.jpg", "label": None, "confidence": None, "p_Cat": None, "p_Dog": None, "p_Other": None,
         "model_version": "abc", "error_code": "empty", "error_message": "the file is empty"},
    ]  # fmt: skip
    return to_table(rows, CLASSES)


def test_formats_read_back_with_their_own_readers(tmp_path):
    table = _sample_table()
    assert schema(CLASSES).names == COLUMNS

    write_table(table, tmp_path / "t.parquet")
    assert pq.read_table(tmp_path / "t.parquet").to_pylist() == table.to_pylist()

    write_table(table, tmp_path / "t.csv")
    with (tmp_path / "t.csv").open(newline="", encoding="utf-8") as stream:
        read = list(csv.DictReader(stream))
    assert list(read[0]) == COLUMNS
    assert read[0]["path"] == '/p/é cat, "quoted".jpg' and float(read[0]["p_Dog"]) == 0.2
    assert (read[1]["label"], read[1]["error_code"]) == ("", "empty")

    write_table(table, tmp_path / "t.jsonl")
    lines = (tmp_path / "t.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == table.to_pylist()
    assert list(json.loads(lines[0])) == COLUMNS

    for suffix in (".parquet", ".csv", ".jsonl"):
        assert read_table(tmp_path / f"t{suffix}", CLASSES).to_pylist() == table.to_pylist(), suffix


def test_unknown_format_and_foreign_tables_are_refused(tmp_path, capsys):
    assert cli.run(classify.main, [str(tmp_path), "--output", str(tmp_path / "out.xlsx")]) == 1
    assert "error: the output must end in .parquet, .csv, .jsonl" in capsys.readouterr().err
    with pytest.raises(DatasetError, match=r"must end in \.parquet, \.csv, \.jsonl"):
        write_table(_sample_table(), tmp_path / "out.xlsx")
    (tmp_path / "other.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="other.csv"):
        read_table(tmp_path / "other.csv", CLASSES)


# --- resuming ----------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_a_stopped_job_goes_on_where_it_stopped_and_equals_an_uninterrupted_one(tmp_path, replica, suffix):
    make_collection(tmp_path / "photos")
    files = list_files([tmp_path / "photos"])
    uninterrupted = tmp_path / f"whole{suffix}"
    _job(files, uninterrupted, InProcess(replica), replica)

    output = tmp_path / f"predictions{suffix}"
    with pytest.raises(KeyboardInterrupt):
        _job(files, output, InProcess(replica, stop_after=3), replica, part_files=4)
    store = PartStore(output, CLASSES)
    assert not output.exists()  # no half-written table: only whole parts
    assert store.read().num_rows == 6  # one part of 4, then the 2 answers in hand when stopped
    # A kill in the middle of a commit leaves a temporary file, never a part.
    (store.folder / ".part-000002.x.tmp.parquet").write_bytes(b"PAR1 half")
    committed = set(store.read().column("path").to_pylist())

    engine = InProcess(replica)
    summary = _job(files, output, engine, replica, part_files=4)
    assert sorted(engine.seen) == sorted(set(files) - committed)  # only what was not committed, each once
    assert summary.classified == len(files) - 6 and summary.rows == len(files)
    _assert_same_rows(_rows(output), _rows(uninterrupted))
    assert not store.folder.exists()


def test_a_finished_table_only_grows_by_new_files(tmp_path, replica):
    make_collection(tmp_path / "photos", photos=3)
    output = tmp_path / "predictions.parquet"
    _job(list_files([tmp_path / "photos"]), output, InProcess(replica), replica)
    written = output.stat().st_mtime_ns

    engine = InProcess(replica)
    assert _job(list_files([tmp_path / "photos"]), output, engine, replica).classified == 0
    assert engine.seen == [] and output.stat().st_mtime_ns == written

    (tmp_path / "photos" / "new.jpg").write_bytes(make_photo(seed=50))
    summary = _job(list_files([tmp_path / "photos"]), output, engine, replica)
    assert engine.seen == [str(tmp_path / "photos" / "new.jpg")]
    assert summary.rows == len(_rows(output)) == len(list_files([tmp_path / "photos"]))


def test_another_models_table_is_refused_unless_overwritten(tmp_path, spec, replica, colour_model_path):
    make_collection(tmp_path / "photos", photos=2)
    files = list_files([tmp_path / "photos"])
    output = tmp_path / "predictions.jsonl"
    other = dataclasses.replace(spec, model_path=str(colour_model_path)).load()
    with pytest.raises(KeyboardInterrupt):
        _job(files, output, InProcess(other, stop_after=1), other)
    with pytest.raises(JobError, match=f"answers of another model .{other.model_version}"):
        _job(files, output, InProcess(replica), replica)

    engine = InProcess(replica)
    summary = _job(files, output, engine, replica, overwrite=True)
    assert sorted(engine.seen) == files and summary.classified == len(files)
    assert {row["model_version"] for row in _rows(output)} == {replica.model_version}


# Slow, and left out of the default run: under heavy load (load average 8 on 2 cores) the command once
# finished with exit 0 despite the Ctrl-C, a window not yet understood (see docs/bulk.md, "Known issues").
@pytest.mark.slow
def test_ctrl_c_on_the_command_commits_whole_parts_and_the_rerun_completes_the_table(
    tmp_path, config_file, three_class_model_path, replica
):
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) on a real run with the process pool."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(400):
        (folder / f"{i:03d}.png").write_bytes(make_photo(size=(40, 32), fmt="PNG", seed=i))
    output = tmp_path / "predictions.parquet"
    command = [sys.executable, "-m", "catdog.bulk.classify", str(folder), "--output", str(output), "--workers", "1"]
    command += ["--config", str(config_file), "--model", str(three_class_model_path)]
    small_parts = ["--set", "bulk.batch_size=2", "--set", "bulk.part_files=2"]
    store = PartStore(output, CLASSES)

    process = subprocess.Popen([*command, *small_parts], start_new_session=True, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not store.parts() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert not output.exists()
    committed = store.read().column("path").to_pylist()
    assert 0 < len(committed) < 400

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert rerun.returncode == 0, rerun.stderr
    assert f"classified {400 - len(committed)} file(s)" in rerun.stdout
    whole = tmp_path / "whole.parquet"
    _job(list_files([folder]), whole, InProcess(replica, batch_size=32), replica)
    _assert_same_rows(_rows(output), _rows(whole))


def test_the_ray_engine_without_ray_says_how_to_install_it(monkeypatch, spec):
    from catdog.bulk.ray_engine import RayEngine

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails, as where the extra is not installed
    with pytest.raises(JobError, match="pip install -r requirements-bulk.txt"):
        list(RayEngine(spec, 2, 4).classify(["/photo.jpg"]))
