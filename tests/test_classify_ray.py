"""catdog classify --engine ray on a local Ray with 2 CPUs: the same rows as the local engine.

Marked ``ray``: left out of the default run (Ray is an optional extra,
requirements-bulk.txt); ``.ci/run`` installs the extra and runs
``pytest -m ray``, where a missing Ray is a failure, not a skip.
"""

from __future__ import annotations

import os

import pytest

from catdog.bulk import classify
from catdog.bulk.table import read_table
from helpers import CLASSES, make_collection

pytestmark = pytest.mark.ray

if not os.environ.get("CI"):
    pytest.importorskip("ray", reason="needs Ray: pip install -r requirements-bulk.txt; CI installs it")


def test_ray_engine_gives_the_local_engines_rows(tmp_path, config_file, three_class_model_path, monkeypatch):
    expected = make_collection(tmp_path / "photos", photos=12)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # a local Ray, started for the job
    common = ["--config", str(config_file), "--model", str(three_class_model_path), "--set", "bulk.batch_size=4"]
    source = str(tmp_path / "photos")
    assert classify.main([source, "--output", str(tmp_path / "local.parquet"), "--workers", "1", *common]) == 0
    ray_output = tmp_path / "ray.csv"
    assert classify.main([source, "--output", str(ray_output), "--engine", "ray", "--workers", "2", *common]) == 0

    local, on_ray = (read_table(path, CLASSES).to_pylist() for path in (tmp_path / "local.parquet", ray_output))
    assert len(on_ray) == len(expected)
    assert [(row["path"], row["label"], row["error_code"]) for row in on_ray] == [
        (row["path"], row["label"], row["error_code"]) for row in local
    ]
    for a, b in zip(on_ray, local, strict=True):
        assert [a[f"p_{name}"] for name in CLASSES] == [
            pytest.approx(b[f"p_{name}"], abs=1e-6) if b[f"p_{name}"] is not None else None for name in CLASSES
        ]
    assert {row["error_code"] for row in on_ray} == {code for code in expected.values()}
