"""A real headless Chromium (Debian's, driven by Playwright) against gunicorn.

The page is used as a person would: choose a file, drop or paste one,
submit, wait for the label and the heatmap. Screenshots go to ``tmp_path``
and, if ``CATDOG_SCREENSHOT_DIR`` is set, there as well. In CI (``CI`` set)
these tests never skip: a missing browser is a failure.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from helpers import CLASSES, build_colour_model, make_photo, save_model, solid_photo

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Read at import: conftest clears CATDOG_* variables around every test.
SCREENSHOT_DIR = os.environ.get("CATDOG_SCREENSHOT_DIR")

pytestmark = pytest.mark.browser

if not Path(CHROMIUM).exists() and not os.environ.get("CI"):
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium); CI installs it", allow_module_level=True)

from playwright.sync_api import expect, sync_playwright  # noqa: E402  (only once the browser is known)


@pytest.fixture(scope="module")
def server(live_server, colour_model_path):
    """The colour model (red Cat, green Dog, blue Other), so a test can ask for "neither"."""
    return live_server(model_path=colour_model_path, classes=CLASSES, workers=1, threads=4)


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    page.on(
        "console",
        lambda message: (
            message.type == "error"
            and not message.text.startswith("Failed to load resource")  # reported below, with the address
            and problems.append(f"console: {message.text}")
        ),
    )
    # /predict may refuse a bad file (the page shows that in words); nothing else may fail.
    page.on(
        "response",
        lambda response: (
            response.status >= 400
            and not response.url.startswith(f"{server.url}/predict")
            and problems.append(f"{response.status} for {response.url}")
        ),
    )
    page.goto(f"{server.url}/")
    yield page
    context.close()
    assert problems == [], f"the browser reported errors: {problems}"


def save_screenshot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    if SCREENSHOT_DIR:
        Path(SCREENSHOT_DIR).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(SCREENSHOT_DIR) / name)
    return path


def choose_file(page, data: bytes, name: str = "cat.jpg", mime: str = "image/jpeg") -> None:
    page.set_input_files("#file-input", files=[{"name": name, "mimeType": mime, "buffer": data}])


VERDICTS = {"Cat": "Cat", "Dog": "Dog", "Other": "Neither a cat nor a dog"}


def expect_result(page) -> str:
    expect(page.locator("#heatmap")).to_be_visible(timeout=30_000)
    label = page.locator("#result-label").inner_text()
    assert label in VERDICTS.values()
    assert VERDICTS[page.locator("#result-label").get_attribute("data-label")] == label
    assert page.locator("#heatmap").get_attribute("src").startswith("data:image/png;base64,")
    expect(page.locator("#photo")).to_be_visible()
    assert page.evaluate("document.getElementById('heatmap').naturalWidth") > 0
    return label


def test_upload_shows_label_bars_and_heatmap(page, tmp_path):
    choose_file(page, make_photo((500, 375), seed=1))
    expect(page.locator("#preview")).to_be_visible()
    url_before = page.url
    page.click("#submit-button")
    label = expect_result(page)
    assert page.url == url_before  # no reload
    confidence = page.locator("#result-confidence").inner_text()
    assert confidence.endswith("% sure")
    values = [float(v) for v in page.locator("#result-bars progress").evaluate_all("els => els.map(e => e.value)")]
    assert len(values) == 3 and sum(values) == pytest.approx(1.0, abs=1e-3)
    assert label in page.locator("#status").inner_text()
    assert save_screenshot(page, tmp_path, "upload-result.png").stat().st_size > 10_000


def test_a_bad_file_shows_a_message_in_words(page):
    choose_file(page, b"these are my notes, not a photo", name="notes.txt", mime="text/plain")
    page.click("#submit-button")
    expect(page.locator("#error")).to_have_text("The file is not an image we can read.", timeout=30_000)
    expect(page.locator("#result")).to_be_hidden()


def test_drop_and_paste_choose_the_file(page):
    for event in ("drop", "paste"):
        page.evaluate("document.getElementById('preview').hidden = true")
        page.evaluate(
            """([kind, bytes]) => {
                const file = new File([new Uint8Array(bytes)], kind + ".jpg", {type: "image/jpeg"});
                const transfer = new DataTransfer();
                transfer.items.add(file);
                if (kind === "drop") {
                    document.getElementById("drop-zone").dispatchEvent(
                        new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true}));
                } else {
                    document.dispatchEvent(
                        new ClipboardEvent("paste", {clipboardData: transfer, bubbles: true, cancelable: true}));
                }
            }""",
            [event, list(make_photo(seed=2))],
        )
        expect(page.locator("#preview")).to_be_visible()
        assert page.evaluate("document.getElementById('file-input').files[0].name") == f"{event}.jpg"
    page.click("#submit-button")
    expect_result(page)


def test_keyboard_reaches_the_controls(page):
    reached = []
    for _ in range(8):
        page.keyboard.press("Tab")
        reached.append(page.evaluate("document.activeElement.id"))
    assert {"file-input", "explain", "submit-button"} <= set(reached)
    choose_file(page, make_photo(seed=3))
    page.focus("#submit-button")
    page.keyboard.press("Enter")
    expect_result(page)


def test_phone_sized_screen(browser, server, tmp_path):
    context = browser.new_context(viewport={"width": 375, "height": 740}, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.goto(f"{server.url}/")
    choose_file(page, make_photo((375, 500), seed=4))
    page.click("#submit-button")
    expect_result(page)
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    save_screenshot(page, tmp_path, "phone-result.png")
    context.close()


def test_without_javascript_the_form_still_works(browser, server, tmp_path):
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto(f"{server.url}/")
    choose_file(page, make_photo((400, 300), seed=5), name="<b>bold</b>.jpg")
    with page.expect_navigation():
        page.click("#submit-button")
    expect_result(page)
    assert page.locator("#result-filename").inner_text() == "<b>bold</b>.jpg"
    save_screenshot(page, tmp_path, "no-js-result.png")
    context.close()


@pytest.mark.parametrize("javascript", [True, False], ids=["fetch", "no-js-form"])
def test_a_photo_of_neither_says_so_and_still_shows_bars_and_heatmap(browser, server, tmp_path, javascript):
    context = browser.new_context(java_script_enabled=javascript)
    page = context.new_page()
    page.goto(f"{server.url}/")
    choose_file(page, solid_photo((30, 30, 220), (320, 240), "JPEG"), name="teapot.jpg")
    if javascript:
        page.click("#submit-button")
    else:
        with page.expect_navigation():
            page.click("#submit-button")
    assert expect_result(page) == "Neither a cat nor a dog"
    bars = "els => els.map(e => [e.closest('li').dataset.class, e.value])"
    values = page.locator("#result-bars progress").evaluate_all(bars)
    assert max(values, key=lambda item: float(item[1]))[0] == "Other"
    if javascript:
        assert page.locator("#status").inner_text().startswith("Result: Neither a cat nor a dog,")
    save_screenshot(page, tmp_path, f"neither-{'js' if javascript else 'no-js'}.png")
    context.close()


@pytest.fixture(scope="module")
def reluctant_server(live_server, tmp_path_factory):
    """The colour model with a decision bias that all but forbids Other: a blue photo is answered, with a note."""
    import hashlib
    import json

    model_path = save_model(build_colour_model(), tmp_path_factory.mktemp("reluctant") / "model.h5")
    calibration = {"temperature": 1.0, "class_bias": [0.0, 0.0, 0.0], "decision_bias": [0.0, 0.0, -50.0]}
    sha256 = hashlib.sha256(model_path.read_bytes()).hexdigest()
    (model_path.parent / "metrics.json").write_text(json.dumps({"model_sha256": sha256, "calibration": calibration}))
    return live_server(model_path=model_path, classes=CLASSES, workers=1, threads=2)


def test_the_page_says_why_when_the_answer_is_not_the_most_probable_class(browser, reluctant_server, tmp_path):
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{reluctant_server.url}/")
    note = page.locator("#result-note")
    choose_file(page, solid_photo((220, 30, 30), (320, 240), "JPEG"), name="red.jpg")
    page.click("#submit-button")
    assert expect_result(page) == "Cat"
    expect(note).to_be_hidden()  # Cat is also the most probable class: nothing to explain
    choose_file(page, solid_photo((30, 30, 220), (320, 240), "JPEG"), name="blue.jpg")
    page.click("#submit-button")
    expect(note).to_be_visible(timeout=30_000)
    assert page.locator("#result-label").get_attribute("data-label") != "Other"
    assert note.inner_text().startswith("Other is likelier (")
    save_screenshot(page, tmp_path, "answer-with-note.png")
    context.close()
