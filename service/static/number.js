// The page's "Number" mode: a wide canvas or an upload sent to POST /read; the number, a box over each digit,
// and each digit's probabilities on hover or focus.
"use strict";

(() => {
  const READ_URL = "read";
  const READ_DELAY_MS = 600;
  // Digits written across most of the canvas height get MNIST's pen: about a ninth of the digit's height.
  const STROKE_FRACTION = 1 / 10;
  // `percent` and `renderBars` are app.js's (loaded first): one bar chart for both modes.
  const $ = (id) => document.getElementById(id);
  const ui = {
    canvas: $("number-canvas"),
    file: $("number-file"),
    clear: $("number-clear"),
    status: $("number-status"),
    error: $("number-error"),
    result: $("number-result"),
    text: $("number-text"),
    confidence: $("number-confidence"),
    image: $("number-image"),
    boxes: $("number-boxes"),
    digits: $("number-digits"),
    detail: $("number-detail"),
    detailTitle: $("number-detail-title"),
    bars: $("number-bars"),
  };
  const INITIAL_STATUS = ui.status.textContent;
  const context = ui.canvas.getContext("2d");
  let imageUrl = null;
  let controller = null;
  let timer = null;
  let hasInk = false;
  let pointer = null;
  let last = null;

  function resetCanvas() {
    context.fillStyle = "#ffffff";
    context.fillRect(0, 0, ui.canvas.width, ui.canvas.height);
    context.strokeStyle = "#000000";
    context.fillStyle = "#000000";
    context.lineWidth = ui.canvas.height * STROKE_FRACTION;
    context.lineCap = "round";
    context.lineJoin = "round";
    hasInk = false;
  }

  function showMessage(text, isError) {
    ui.error.hidden = !isError;
    ui.status.hidden = isError;
    (isError ? ui.error : ui.status).textContent = text;
  }

  function reset() {
    controller?.abort();
    ui.result.hidden = true;
    showMessage(INITIAL_STATUS, false);
  }

  async function read(blob, fileName) {
    controller?.abort();
    const own = new AbortController();
    controller = own;
    if (imageUrl) URL.revokeObjectURL(imageUrl);
    imageUrl = URL.createObjectURL(blob);
    showMessage("Reading the number…", false);
    const body = new FormData();
    body.append("file", blob, fileName);
    let response;
    let payload = null;
    try {
      response = await fetch(READ_URL, { method: "POST", body, signal: own.signal });
      payload = await response.json().catch(() => null);
    } catch {
      if (!own.signal.aborted) showMessage("Could not reach the service. Check the connection and try again.", true);
      return;
    }
    if (own.signal.aborted) return;
    if (!response.ok) {
      ui.result.hidden = true;
      const detail = typeof payload?.detail === "string" ? payload.detail : "The service could not read the image.";
      showMessage(`${detail} (HTTP ${response.status})`, true);
      return;
    }
    if (typeof payload?.text !== "string" || !Array.isArray(payload.digits)) {
      showMessage("The service sent an answer this page does not understand. Reload the page and try again.", true);
      return;
    }
    show(payload);
  }

  function select(index, digit) {
    for (const element of ui.boxes.children) element.classList.toggle("is-selected", element.dataset.index === String(index));
    for (const element of ui.digits.children) element.classList.toggle("is-selected", element.dataset.index === String(index));
    ui.detailTitle.textContent = `Digit ${index + 1}: ${digit.label}, ${percent.format(digit.confidence)} confidence`;
    renderBars(ui.bars, digit.probabilities, digit.label);
    ui.detail.hidden = false;
  }

  function placeBoxes(digits) {
    const width = ui.image.naturalWidth;
    const height = ui.image.naturalHeight;
    ui.boxes.replaceChildren(
      ...digits.map((digit, index) => {
        const [x0, y0, x1, y1] = digit.box;
        const box = document.createElement("div");
        box.className = "number-box";
        box.dataset.index = String(index);
        box.style.left = `${(100 * x0) / width}%`;
        box.style.top = `${(100 * y0) / height}%`;
        box.style.width = `${(100 * (x1 - x0)) / width}%`;
        box.style.height = `${(100 * (y1 - y0)) / height}%`;
        box.addEventListener("mouseenter", () => select(index, digit));
        return box;
      }),
    );
  }

  function show(payload) {
    const digits = payload.digits;
    ui.text.textContent = payload.text || "(nothing)";
    ui.confidence.textContent = `${percent.format(payload.confidence)} confidence`;
    ui.digits.replaceChildren(
      ...digits.map((digit, index) => {
        const item = document.createElement("li");
        item.className = "number-digit";
        item.tabIndex = 0;
        item.dataset.index = String(index);
        item.textContent = String(digit.label);
        item.setAttribute("aria-label", `Digit ${index + 1}: ${digit.label}, ${percent.format(digit.confidence)} confidence`);
        item.addEventListener("focus", () => select(index, digit));
        item.addEventListener("mouseenter", () => select(index, digit));
        return item;
      }),
    );
    ui.detail.hidden = true;
    ui.image.onload = () => placeBoxes(digits);
    ui.image.src = imageUrl;
    ui.result.hidden = false;
    showMessage(`Read ${payload.text || "nothing"} (${percent.format(payload.confidence)} confidence).`, false);
  }

  function point(event) {
    const rect = ui.canvas.getBoundingClientRect();
    return {
      x: ((event.clientX - rect.left) * ui.canvas.width) / rect.width,
      y: ((event.clientY - rect.top) * ui.canvas.height) / rect.height,
    };
  }

  ui.canvas.addEventListener("pointerdown", (event) => {
    if (pointer !== null || (event.pointerType === "mouse" && event.button !== 0)) return;
    event.preventDefault();
    pointer = event.pointerId;
    ui.canvas.setPointerCapture(event.pointerId);
    clearTimeout(timer);
    last = point(event);
    context.beginPath();
    context.arc(last.x, last.y, context.lineWidth / 2, 0, 2 * Math.PI);
    context.fill();
    hasInk = true;
  });

  ui.canvas.addEventListener("pointermove", (event) => {
    if (event.pointerId !== pointer) return;
    const samples = event.getCoalescedEvents?.() ?? [];
    for (const sample of samples.length > 0 ? samples : [event]) {
      const next = point(sample);
      context.beginPath();
      context.moveTo(last.x, last.y);
      context.lineTo(next.x, next.y);
      context.stroke();
      last = next;
    }
  });

  function endStroke(event) {
    if (event.pointerId !== pointer) return;
    pointer = null;
    clearTimeout(timer);
    timer = setTimeout(() => {
      if (!hasInk) return;
      ui.canvas.toBlob((blob) => {
        if (blob && hasInk) read(blob, "number.png");
      }, "image/png");
    }, READ_DELAY_MS);
  }
  ui.canvas.addEventListener("pointerup", endStroke);
  ui.canvas.addEventListener("pointercancel", endStroke);

  ui.clear.addEventListener("click", () => {
    clearTimeout(timer);
    resetCanvas();
    reset();
  });

  ui.file.addEventListener("change", () => {
    const file = ui.file.files?.[0];
    if (file) read(file, file.name);
    ui.file.value = "";
  });

  resetCanvas();
})();
