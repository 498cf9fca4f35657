// The page's behaviour: read an uploaded or drawn digit, send it to POST /predict and show every model's answer.
"use strict";

// Relative, so the page also works when a proxy serves the service under a path prefix.
const PREDICT_URL = "predict?debug=true";
// Lets a digit drawn in several strokes (a 4, a crossed 7) be sent once, after the last stroke.
const PREDICT_DELAY_MS = 400;
// MNIST strokes are about a tenth of the digit's height; with the digit filling most of the canvas this matches.
const STROKE_FRACTION = 1 / 9;
const DISPLAY_NAMES = { mlp: "MLP", lenet5: "LeNet-5", cnn: "CNN" };
// Used only when an error response carries no readable "detail" (for example a proxy's HTML error page).
const FALLBACK_ERRORS = {
  400: "The file could not be read as an image.",
  413: "The file is too large.",
  415: "The file is not a supported image type.",
  422: "No digit was found in the image.",
  503: "The service is busy.",
};

const percent = new Intl.NumberFormat(undefined, { style: "percent", minimumFractionDigits: 1, maximumFractionDigits: 1 });
const milliseconds = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });

const $ = (id) => document.getElementById(id);
const elements = {
  fileInput: $("file-input"),
  dropzone: $("dropzone"),
  preview: $("preview"),
  fileName: $("file-name"),
  canvas: $("draw-canvas"),
  clearButton: $("clear-button"),
  results: $("results"),
  status: $("status"),
  error: $("error"),
  resultBody: $("result-body"),
  ensembleDigit: $("ensemble-digit"),
  ensembleConfidence: $("ensemble-confidence"),
  ensembleBars: $("ensemble-bars"),
  agreement: $("agreement"),
  digitCheck: $("digit-check"),
  modelInput: $("model-input"),
  latencyServer: $("latency-server"),
  latencyTotal: $("latency-total"),
  latencyDetail: $("latency-detail"),
  models: $("models"),
  modelTemplate: $("model-card-template"),
};

const INITIAL_STATUS = elements.status.textContent;

// ---- Talking to the API -------------------------------------------------------------------------------------------

let inFlight = null; // {controller, source} of the request whose answer the page is waiting for
let shownSource = null; // "upload" or "drawing": where the results on screen came from

async function predict(blob, fileName, source, description) {
  inFlight?.controller.abort();
  const controller = new AbortController();
  inFlight = { controller, source };
  setBusy(`Predicting ${description}…`);

  const body = new FormData();
  body.append("file", blob, fileName);
  const started = performance.now();
  let response;
  let payload = null;
  try {
    response = await fetch(PREDICT_URL, { method: "POST", body, signal: controller.signal });
    payload = await response.json().catch(() => null);
  } catch {
    if (controller.signal.aborted) return;
    showError("Could not reach the service. Check the connection and try again.");
    return;
  } finally {
    if (inFlight?.controller === controller) inFlight = null;
  }
  if (controller.signal.aborted) return;
  const roundTripMs = performance.now() - started;

  if (!response.ok) {
    showError(describeError(response, payload));
  } else if (!isPrediction(payload)) {
    showError("The service sent an answer this page does not understand. Reload the page and try again.");
  } else {
    showResults(payload, roundTripMs, source, description);
  }
}

function describeError(response, payload) {
  const detail = payload?.detail;
  let message;
  if (typeof detail === "string" && detail.trim()) {
    message = detail;
  } else if (Array.isArray(detail) && detail.length > 0) {
    // FastAPI's request-validation errors: a list of {loc, msg, type}.
    message = detail.map((item) => item?.msg ?? String(item)).join("; ");
  } else {
    message = FALLBACK_ERRORS[response.status] ?? "The service could not handle the request.";
  }
  const retryAfter = response.headers.get("Retry-After");
  if (response.status === 503 && retryAfter && /^\d+$/.test(retryAfter)) {
    message += ` Trying again in ${retryAfter} s should work.`;
  }
  return `${message} (HTTP ${response.status})`;
}

function isProbabilities(value) {
  return Array.isArray(value) && value.length === 10 && value.every((p) => typeof p === "number");
}

function isAnswer(value) {
  return Number.isInteger(value?.label) && typeof value.confidence === "number" && isProbabilities(value.probabilities);
}

function isPrediction(payload) {
  return Array.isArray(payload?.predictions) && payload.predictions.every(isAnswer) && isAnswer(payload.ensemble);
}

// ---- Showing state ------------------------------------------------------------------------------------------------

function setBusy(text) {
  elements.results.setAttribute("aria-busy", "true");
  elements.results.classList.add("is-loading");
  elements.error.hidden = true;
  elements.status.hidden = false;
  elements.status.textContent = text;
}

function settle() {
  elements.results.removeAttribute("aria-busy");
  elements.results.classList.remove("is-loading");
}

function showError(message) {
  settle();
  shownSource = null;
  elements.resultBody.hidden = true;
  elements.status.hidden = true;
  elements.error.textContent = message;
  elements.error.hidden = false;
}

function resetResults() {
  inFlight?.controller.abort();
  inFlight = null;
  settle();
  shownSource = null;
  elements.resultBody.hidden = true;
  elements.error.hidden = true;
  elements.status.hidden = false;
  elements.status.textContent = INITIAL_STATUS;
}

function displayName(model) {
  return DISPLAY_NAMES[model] ?? model;
}

function renderBars(list, probabilities, label) {
  list.replaceChildren(
    ...probabilities.map((probability, digit) => {
      const item = document.createElement("li");
      item.className = digit === label ? "bar is-top" : "bar";
      item.style.setProperty("--p", String(Math.min(Math.max(probability, 0), 1)));
      item.title = `${digit}: ${percent.format(probability)}`;
      const track = document.createElement("span");
      track.className = "bar-track";
      track.setAttribute("aria-hidden", "true");
      const fill = document.createElement("span");
      fill.className = "bar-fill";
      track.append(fill);
      const digitLabel = document.createElement("span");
      digitLabel.className = "bar-label";
      digitLabel.textContent = String(digit);
      const value = document.createElement("span");
      value.className = "visually-hidden";
      value.textContent = `: ${percent.format(probability)}`;
      item.append(track, digitLabel, value);
      return item;
    }),
  );
}

function renderModel(prediction, ensembleLabel) {
  const card = elements.modelTemplate.content.firstElementChild.cloneNode(true);
  card.dataset.model = prediction.model;
  card.classList.toggle("disagrees", prediction.label !== ensembleLabel);
  card.querySelector(".model-name").textContent = displayName(prediction.model);
  card.querySelector(".version").textContent = `version ${prediction.version}`;
  card.querySelector(".digit").textContent = String(prediction.label);
  card.querySelector(".confidence").textContent = `${percent.format(prediction.confidence)} confidence`;
  const bars = card.querySelector(".bars");
  bars.setAttribute("aria-label", `${displayName(prediction.model)} probabilities by digit`);
  renderBars(bars, prediction.probabilities, prediction.label);
  return card;
}

function showLatency(timings, roundTripMs) {
  const known = timings && typeof timings.total_ms === "number";
  elements.latencyServer.textContent = known ? `${milliseconds.format(timings.total_ms)} ms` : "–";
  elements.latencyTotal.textContent = `${milliseconds.format(roundTripMs)} ms`;
  const steps = [
    ["read", timings?.read_ms],
    ["preprocess", timings?.preprocess_ms],
    ["inference", timings?.inference_ms],
  ].filter(([, value]) => typeof value === "number");
  elements.latencyDetail.textContent =
    steps.length > 0 ? `${steps.map(([step, value]) => `${step} ${milliseconds.format(value)}`).join(" · ")} ms` : "";
}

// What the page says when the digit check flags an image: the digits shown are then only the models' guesses.
const CHECK_NOTICES = {
  "several digits": "This looks like several digits. The models read one digit at a time: crop the image to one digit.",
  "not a digit": "This does not look like a handwritten digit. The digits below are only guesses.",
};

function digitCheckNotice(check) {
  if (check?.one_digit !== false) return "";
  return CHECK_NOTICES[check.reason] ?? CHECK_NOTICES["not a digit"];
}

function showResults(payload, roundTripMs, source, description) {
  settle();
  shownSource = source;
  const { ensemble, predictions } = payload;

  const notice = digitCheckNotice(payload.digit_check);
  elements.digitCheck.textContent = notice;
  elements.digitCheck.hidden = notice === "";

  elements.ensembleDigit.textContent = String(ensemble.label);
  elements.ensembleConfidence.textContent = `${percent.format(ensemble.confidence)} confidence`;
  renderBars(elements.ensembleBars, ensemble.probabilities, ensemble.label);
  const agreeing = predictions.filter((prediction) => prediction.label === ensemble.label).length;
  elements.agreement.textContent =
    agreeing === predictions.length ? `All ${predictions.length} models agree` : `${agreeing} of ${predictions.length} models agree`;
  elements.agreement.classList.toggle("is-split", agreeing !== predictions.length);

  // Simplest model first, as the reference design listed them; models the page does not know go last.
  const rank = (prediction) => {
    const known = Object.keys(DISPLAY_NAMES);
    const index = known.indexOf(prediction.model);
    return index === -1 ? known.length : index;
  };
  const ordered = [...predictions].sort((a, b) => rank(a) - rank(b));
  elements.models.replaceChildren(...ordered.map((prediction) => renderModel(prediction, ensemble.label)));

  const image = payload.image_png_base64;
  elements.modelInput.hidden = typeof image !== "string";
  if (typeof image === "string") elements.modelInput.src = `data:image/png;base64,${image}`;

  showLatency(payload.timings_ms, roundTripMs);

  const perModel = ordered.map((prediction) => `${displayName(prediction.model)} ${prediction.label}`).join(", ");
  elements.status.textContent =
    `${notice ? `${notice} ` : ""}Prediction for ${description}: ${ensemble.label} ` +
    `(${percent.format(ensemble.confidence)} confidence). ${perModel}.`;
  elements.resultBody.hidden = false;
}

// ---- Upload -------------------------------------------------------------------------------------------------------

let previewUrl = null;

function formatBytes(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${milliseconds.format(bytes / 1024)} KB`;
  return `${milliseconds.format(bytes / (1024 * 1024))} MB`;
}

function uploadFile(file) {
  if (!file) return;
  if (previewUrl) URL.revokeObjectURL(previewUrl);
  previewUrl = URL.createObjectURL(file);
  elements.preview.src = previewUrl;
  elements.preview.alt = `Preview of ${file.name}`;
  elements.preview.hidden = false;
  elements.dropzone.classList.add("has-preview");
  elements.fileName.textContent = `${file.name} · ${formatBytes(file.size)}`;
  predict(file, file.name, "upload", file.name);
}

elements.preview.addEventListener("error", () => {
  // Not every file the server accepts (TIFF, for one) can be shown by every browser; the prediction still runs.
  elements.preview.hidden = true;
  elements.dropzone.classList.remove("has-preview");
});

elements.fileInput.addEventListener("change", () => {
  uploadFile(elements.fileInput.files?.[0]);
  // Allows choosing the same file again after an edit on disk.
  elements.fileInput.value = "";
});

// The whole window accepts drops, so a near miss does not make the browser navigate away to the file.
let dragDepth = 0;
window.addEventListener("dragenter", (event) => {
  if (!event.dataTransfer?.types.includes("Files")) return;
  dragDepth += 1;
  elements.dropzone.classList.add("is-dragging");
});
window.addEventListener("dragleave", () => {
  dragDepth = Math.max(0, dragDepth - 1);
  if (dragDepth === 0) elements.dropzone.classList.remove("is-dragging");
});
window.addEventListener("dragover", (event) => {
  event.preventDefault();
  if (event.dataTransfer) event.dataTransfer.dropEffect = "copy";
});
window.addEventListener("drop", (event) => {
  event.preventDefault();
  dragDepth = 0;
  elements.dropzone.classList.remove("is-dragging");
  uploadFile(event.dataTransfer?.files?.[0]);
});
window.addEventListener("paste", (event) => {
  const file = [...(event.clipboardData?.files ?? [])].find((item) => item.type.startsWith("image/"));
  if (file) uploadFile(file);
});

// ---- Drawing ------------------------------------------------------------------------------------------------------

const canvas = elements.canvas;
const context = canvas.getContext("2d");
let activePointer = null;
let lastPoint = null;
let hasInk = false;
let predictTimer = null;

function resetCanvas() {
  // Opaque white paper: the PNG then looks exactly like what the user saw.
  context.fillStyle = "#ffffff";
  context.fillRect(0, 0, canvas.width, canvas.height);
  context.strokeStyle = "#000000";
  context.fillStyle = "#000000";
  context.lineWidth = canvas.width * STROKE_FRACTION;
  context.lineCap = "round";
  context.lineJoin = "round";
  hasInk = false;
}

function canvasPoint(event) {
  const rect = canvas.getBoundingClientRect();
  return {
    x: ((event.clientX - rect.left) * canvas.width) / rect.width,
    y: ((event.clientY - rect.top) * canvas.height) / rect.height,
  };
}

function drawSegment(from, to) {
  context.beginPath();
  context.moveTo(from.x, from.y);
  context.lineTo(to.x, to.y);
  context.stroke();
}

function predictDrawing() {
  predictTimer = null;
  if (!hasInk) return;
  canvas.toBlob((blob) => {
    // hasInk again: Clear may have been pressed while the PNG was being encoded.
    if (blob && hasInk) predict(blob, "drawing.png", "drawing", "your drawing");
  }, "image/png");
}

canvas.addEventListener("pointerdown", (event) => {
  if (activePointer !== null || (event.pointerType === "mouse" && event.button !== 0)) return;
  event.preventDefault();
  activePointer = event.pointerId;
  canvas.setPointerCapture(event.pointerId);
  clearTimeout(predictTimer);
  lastPoint = canvasPoint(event);
  context.beginPath();
  context.arc(lastPoint.x, lastPoint.y, context.lineWidth / 2, 0, 2 * Math.PI);
  context.fill();
  hasInk = true;
});

canvas.addEventListener("pointermove", (event) => {
  if (event.pointerId !== activePointer) return;
  // Coalesced events keep fast strokes smooth on high-rate pens and touch screens.
  const coalesced = event.getCoalescedEvents?.() ?? [];
  for (const sample of coalesced.length > 0 ? coalesced : [event]) {
    const point = canvasPoint(sample);
    drawSegment(lastPoint, point);
    lastPoint = point;
  }
});

function endStroke(event) {
  if (event.pointerId !== activePointer) return;
  activePointer = null;
  lastPoint = null;
  clearTimeout(predictTimer);
  predictTimer = setTimeout(predictDrawing, PREDICT_DELAY_MS);
}
canvas.addEventListener("pointerup", endStroke);
canvas.addEventListener("pointercancel", endStroke);

elements.clearButton.addEventListener("click", () => {
  clearTimeout(predictTimer);
  predictTimer = null;
  resetCanvas();
  // Results of an upload stay; those of the drawing just erased (shown or on their way) go.
  if (inFlight?.source === "drawing" || (shownSource === "drawing" && !inFlight)) resetResults();
});

resetCanvas();
