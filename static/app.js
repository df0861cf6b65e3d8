/* The upload page without reloads: choose, drop or paste a photo, preview it,
   post it to /predict with fetch and fill in the result. Without JavaScript
   the same form posts to / and the server renders the result. Everything the
   user sent is shown with textContent or object URLs, never as HTML. */
(function () {
  "use strict";

  const form = document.getElementById("upload-form");
  if (!form || !window.fetch || !window.FormData) {
    return;
  }
  document.documentElement.classList.add("js");

  const byId = (id) => document.getElementById(id);
  const input = byId("file-input");
  const dropZone = byId("drop-zone");
  const preview = byId("preview");
  const explain = byId("explain");
  const button = byId("submit-button");
  const errorBox = byId("error");
  const status = byId("status");
  const result = byId("result");
  const label = byId("result-label");
  const confidence = byId("result-confidence");
  const note = byId("result-note");
  const fileRow = byId("result-file");
  const fileName = byId("result-filename");
  const photo = byId("photo");
  const heatmap = byId("heatmap");
  const maxBytes = Number(form.dataset.maxBytes);
  const maxText = form.dataset.maxText;
  const buttonText = button.textContent;

  let chosen = null;
  let previewUrl = null;

  function sentence(text) {
    const words = String(text || "");
    const capital = words.charAt(0).toUpperCase() + words.slice(1);
    return /[.!?]$/.test(capital) ? capital : capital + ".";
  }

  function showError(message) {
    errorBox.textContent = sentence(message);
    errorBox.hidden = false;
  }

  function clearError() {
    errorBox.textContent = "";
    errorBox.hidden = true;
  }

  function percent(p) {
    return (100 * p).toFixed(1) + "%";
  }

  function choose(file) {
    clearError();
    if (!file) {
      return;
    }
    chosen = file;
    if (previewUrl && photo.getAttribute("src") !== previewUrl) {
      URL.revokeObjectURL(previewUrl);
    }
    previewUrl = URL.createObjectURL(file);
    preview.src = previewUrl;
    preview.hidden = false;
    status.textContent = "Chosen: " + (file.name || "pasted image") + ". Press Classify.";
  }

  function putInInput(file) {
    try {
      const transfer = new DataTransfer();
      transfer.items.add(file);
      input.files = transfer.files;
    } catch (ignored) {
      /* Older browsers cannot set files; the chosen file is sent anyway. */
    }
  }

  function firstFile(transfer) {
    if (!transfer) {
      return null;
    }
    const files = Array.from(transfer.files || []);
    if (files.length) {
      return files.find((f) => f.type.startsWith("image/")) || files[0];
    }
    for (const item of Array.from(transfer.items || [])) {
      if (item.kind === "file") {
        return item.getAsFile();
      }
    }
    return null;
  }

  preview.addEventListener("error", () => {
    /* Some formats (TIFF) cannot be previewed; the server still reads them. */
    preview.hidden = true;
  });

  input.addEventListener("change", () => choose(input.files[0]));

  ["dragenter", "dragover"].forEach((type) =>
    dropZone.addEventListener(type, (event) => {
      event.preventDefault();
      dropZone.classList.add("dragging");
    })
  );
  ["dragleave", "drop"].forEach((type) =>
    dropZone.addEventListener(type, (event) => {
      event.preventDefault();
      dropZone.classList.remove("dragging");
    })
  );
  dropZone.addEventListener("drop", (event) => {
    const file = firstFile(event.dataTransfer);
    if (!file) {
      showError("nothing to use was dropped: drop an image file");
      return;
    }
    putInInput(file);
    choose(file);
  });

  document.addEventListener("paste", (event) => {
    const file = firstFile(event.clipboardData);
    if (file) {
      event.preventDefault();
      putInInput(file);
      choose(file);
    }
  });

  /* The label in words, as the server renders it: "Other" reads "Neither a cat nor a dog". */
  function verdict(name) {
    const row = Array.from(result.querySelectorAll(".bar")).find((r) => r.dataset.class === name);
    return row && row.dataset.verdict ? row.dataset.verdict : name;
  }

  function showResult(body, file) {
    const pct = percent(body.confidence);
    const words = verdict(body.label);
    label.textContent = words;
    label.dataset.label = body.label;
    confidence.textContent = pct + " sure";
    // Only when the answer is not the most probable class: the server says why.
    note.textContent = body.note || "";
    note.hidden = !body.note;
    fileName.textContent = file.name || "";
    fileRow.hidden = !file.name;
    result.querySelectorAll(".bar").forEach((row) => {
      const p = Number(body.probabilities[row.dataset.class] || 0);
      const meter = row.querySelector("progress");
      meter.value = p;
      meter.textContent = percent(p);
      row.querySelector(".bar-value").textContent = percent(p);
    });
    photo.src = previewUrl;
    photo.hidden = false;
    if (body.heatmap_png_base64) {
      heatmap.src = "data:image/png;base64," + body.heatmap_png_base64;
      heatmap.hidden = false;
    } else {
      heatmap.removeAttribute("src");
      heatmap.hidden = true;
    }
    result.hidden = false;
    status.textContent = "Result: " + words + ", " + pct + " sure.";
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const file = chosen || input.files[0];
    if (!file) {
      showError("choose a photo first");
      input.focus();
      return;
    }
    if (file.size > maxBytes) {
      showError("the file is larger than the limit of " + maxText);
      return;
    }
    clearError();
    const data = new FormData();
    data.append("file", file, file.name || "pasted-image");
    const url = form.dataset.predictUrl + (explain.checked ? "?explain=1" : "");
    button.disabled = true;
    button.textContent = "Classifying…";
    result.setAttribute("aria-busy", "true");
    status.textContent = "Classifying your photo…";
    try {
      const response = await fetch(url, {
        method: "POST",
        body: data,
        headers: { Accept: "application/json" },
      });
      let body = null;
      try {
        body = await response.json();
      } catch (ignored) {
        body = null;
      }
      if (!response.ok || !body) {
        const message = body && body.error ? body.error.message : "the server answered with status " + response.status;
        showError(message);
        status.textContent = "";
        return;
      }
      showResult(body, file);
    } catch (networkError) {
      showError("the server could not be reached; check the connection and try again");
      status.textContent = "";
    } finally {
      button.disabled = false;
      button.textContent = buttonText;
      result.removeAttribute("aria-busy");
    }
  });
})();
