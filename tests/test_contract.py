"""The three-class serving contract: Cat, Dog and Other ("neither"), through the API, the page and the console.

The colour model answers by a photo's main colour (red Cat, green Dog, blue
Other), so each test chooses the answer it expects.
"""

from __future__ import annotations

import base64
import io

import pytest

from catdog.labels import describe
from helpers import CLASSES, CLASSES_OVERRIDE, build_tiny_model, save_model, solid_photo

RED, GREEN, BLUE = (220, 30, 30), (30, 220, 30), (30, 30, 220)


@pytest.fixture(scope="module")
def colour_client(colour_model_path):
    from app import create_app

    overrides = {"model.path": str(colour_model_path), **CLASSES_OVERRIDE}
    return create_app({"TESTING": True, "CATDOG_OVERRIDES": overrides}).test_client()


@pytest.mark.parametrize(
    "label, words",
    [("Cat", "Cat"), ("Dog", "Dog"), ("Other", "Neither a cat nor a dog")],
)
def test_describe_says_other_in_words(label, words):
    assert describe(label, CLASSES) == words


@pytest.mark.parametrize(
    "classes, words",
    [(("Cat", "Other"), "Not a cat"), (("Cat", "Dog", "Owl", "Other"), "None of these: a cat, a dog or an owl")],
)
def test_describe_names_every_other_class(classes, words):
    assert describe("Other", classes) == words


@pytest.mark.parametrize("colour, label", [(RED, "Cat"), (GREEN, "Dog"), (BLUE, "Other")])
def test_predict_answers_each_class_with_three_probabilities(colour_client, colour, label):
    response = colour_client.post("/predict", data=solid_photo(colour), content_type="image/png")
    assert response.status_code == 200
    body = response.get_json()
    assert body["label"] == label
    assert list(body["probabilities"]) == ["Cat", "Dog", "Other"]
    assert body["probabilities"][label] == body["confidence"] > 0.9
    assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)


def test_a_batch_answers_other_in_its_place(colour_client):
    images = [base64.b64encode(solid_photo(c)).decode() for c in (BLUE, RED, GREEN, BLUE)]
    body = colour_client.post("/predict", json={"images": images}).get_json()
    assert [item["label"] for item in body["predictions"]] == ["Other", "Cat", "Dog", "Other"]


def test_model_lists_the_three_classes(colour_client):
    assert colour_client.get("/model").get_json()["classes"] == ["Cat", "Dog", "Other"]


def test_the_page_says_neither_a_cat_nor_a_dog_and_still_shows_bars_and_heatmap(colour_client):
    data = {"file": (io.BytesIO(solid_photo(BLUE, (120, 90))), "blue.png"), "explain": "1"}
    html = colour_client.post("/", data=data, content_type="multipart/form-data").get_data(as_text=True)
    assert 'data-label="Other">Neither a cat nor a dog</strong>' in html
    assert html.count("<progress") == 3
    assert 'data-class="Other" data-verdict="Neither a cat nor a dog"' in html
    assert 'src="data:image/png;base64,' in html  # the heatmap


def test_the_page_says_cat_as_cat(colour_client):
    data = {"file": (io.BytesIO(solid_photo(RED)), "red.png")}
    html = colour_client.post("/", data=data, content_type="multipart/form-data").get_data(as_text=True)
    assert 'data-label="Cat">Cat</strong>' in html
    assert "Neither a cat" not in html.split('id="result-bars"', 1)[0]


def test_the_console_says_neither_a_cat_nor_a_dog(colour_model_path, config_file, tmp_path, capsys):
    from catdog.serving import predict

    paths = []
    for name, colour in (("red", RED), ("blue", BLUE)):
        path = tmp_path / f"{name}.png"
        path.write_bytes(solid_photo(colour))
        paths.append(path)
    code = predict.main(
        ["--config", str(config_file), "--set", "data.classes=[Cat, Dog, Other]", "--model", str(colour_model_path)]
        + [str(p) for p in paths]
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    assert lines[0].startswith(f"{paths[0]}: Cat (")
    assert lines[1].startswith(f"{paths[1]}: Neither a cat nor a dog (Other, ")
    assert "Cat 0.0" in lines[1] and "Dog 0.0" in lines[1] and "Other 0.9" in lines[1]


def test_a_model_whose_outputs_do_not_match_the_classes_is_refused_with_503(tmp_path):
    """A two-class model from before "Other" is not served as if it knew three classes."""
    from app import create_app

    path = save_model(build_tiny_model(classes=2), tmp_path / "two_class.h5")
    overrides = {"model.path": str(path), **CLASSES_OVERRIDE}
    client = create_app({"TESTING": True, "CATDOG_OVERRIDES": overrides}).test_client()
    ready = client.get("/ready")
    assert ready.status_code == 503
    message = ready.get_json()["error"]["message"]
    assert "must output (None, 3)" in message and "(None, 2)" in message
    answer = client.post("/predict", data=solid_photo(BLUE), content_type="image/png")
    assert answer.status_code == 503 and answer.get_json()["error"]["code"] == "model_unavailable"


def test_the_console_refuses_a_model_whose_outputs_do_not_match(config_file, tmp_path, capsys):
    from catdog import cli
    from catdog.serving import predict

    model = save_model(build_tiny_model(classes=2), tmp_path / "two_class.h5")
    image = tmp_path / "blue.png"
    image.write_bytes(solid_photo(BLUE))
    argv = ["--config", str(config_file), "--set", "data.classes=[Cat, Dog, Other]", "--model", str(model), str(image)]
    assert cli.run(predict.main, argv) == 1
    err = capsys.readouterr().err
    assert "error:" in err and "must output (None, 3)" in err
