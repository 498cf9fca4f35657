// The page's "Camera" mode: live video from the device's camera (the rear one on phones), downscaled JPEG frames
// sent to POST /detect a few times a second (never more than one in flight), and each number found drawn over
// the video with its reading. Freeze keeps the current frame and its readings on screen to look at them.
"use strict";

(() => {
  const DETECT_URL = "detect";
  // Frames go out this wide (the service reads a 640-px frame as it is), at most this often.
  const FRAME_WIDTH = 640;
  const FRAME_INTERVAL_MS = 250;
  const JPEG_QUALITY = 0.8;
  const $ = (id) => document.getElementById(id);
  const ui = {
    start: $("camera-start"),
    freeze: $("camera-freeze"),
    stop: $("camera-stop"),
    status: $("camera-status"),
    error: $("camera-error"),
    view: $("camera-view"),
    video: $("camera-video"),
    overlay: $("camera-overlay"),
    numbers: $("camera-numbers"),
  };
  const INITIAL_STATUS = ui.status.textContent;
  const frameCanvas = document.createElement("canvas");
  // A stream id of the page's own, so the service can skip a frame overtaken by a newer one.
  const streamId = Array.from(crypto.getRandomValues(new Uint8Array(8)), (b) => b.toString(16).padStart(2, "0")).join("");
  let media = null;
  let frozen = false;
  let inFlight = false;
  let frameNumber = 0;
  let timer = null;
  let lastAnswer = null;

  function showMessage(text, isError) {
    ui.error.hidden = !isError;
    ui.status.hidden = isError;
    (isError ? ui.error : ui.status).textContent = text;
  }

  function describeCameraError(error) {
    if (!navigator.mediaDevices?.getUserMedia) {
      return "This browser cannot use a camera on this page (cameras need HTTPS or localhost). Upload a photo in the Number panel instead.";
    }
    if (error?.name === "NotAllowedError" || error?.name === "SecurityError") {
      return "Camera permission was denied. Allow camera access for this page in the browser's settings, then press Start camera again.";
    }
    if (error?.name === "NotFoundError" || error?.name === "OverconstrainedError") {
      return "No camera was found. Connect a camera and press Start camera again, or upload a photo in the Number panel.";
    }
    if (error?.name === "NotReadableError") {
      return "The camera is in use by another application. Close it and press Start camera again.";
    }
    return "The camera could not be started. Press Start camera to try again.";
  }

  function setRunning(running) {
    ui.start.disabled = running;
    ui.stop.disabled = !running;
    ui.freeze.disabled = !running;
    ui.view.hidden = !running;
    if (!running) setFrozen(false);
  }

  function setFrozen(value) {
    frozen = value;
    ui.freeze.setAttribute("aria-pressed", String(value));
    ui.freeze.textContent = value ? "Resume" : "Freeze";
  }

  async function start() {
    showMessage("Starting the camera…", false);
    try {
      if (!navigator.mediaDevices?.getUserMedia) throw new Error("no getUserMedia");
      media = await navigator.mediaDevices.getUserMedia({ video: { facingMode: { ideal: "environment" } }, audio: false });
    } catch (error) {
      media = null;
      setRunning(false);
      showMessage(describeCameraError(error), true);
      return;
    }
    ui.video.srcObject = media;
    await ui.video.play().catch(() => {});
    setRunning(true);
    showMessage("Looking for numbers…", false);
    schedule(0);
  }

  function stop() {
    clearTimeout(timer);
    media?.getTracks().forEach((track) => track.stop());
    media = null;
    ui.video.srcObject = null;
    lastAnswer = null;
    ui.numbers.replaceChildren();
    setRunning(false);
    showMessage(INITIAL_STATUS, false);
  }

  function schedule(delayMs) {
    clearTimeout(timer);
    timer = setTimeout(sendFrame, delayMs);
  }

  function grabFrame() {
    const width = ui.video.videoWidth;
    const height = ui.video.videoHeight;
    if (!width || !height) return null;
    const scale = Math.min(1, FRAME_WIDTH / width);
    frameCanvas.width = Math.round(width * scale);
    frameCanvas.height = Math.round(height * scale);
    frameCanvas.getContext("2d").drawImage(ui.video, 0, 0, frameCanvas.width, frameCanvas.height);
    return new Promise((resolve) => frameCanvas.toBlob(resolve, "image/jpeg", JPEG_QUALITY));
  }

  async function sendFrame() {
    if (!media || frozen || inFlight) return;
    const started = performance.now();
    const blob = await grabFrame();
    if (!blob) {
      schedule(FRAME_INTERVAL_MS);
      return;
    }
    const size = { width: frameCanvas.width, height: frameCanvas.height };
    inFlight = true;
    frameNumber += 1;
    const body = new FormData();
    body.append("file", blob, "frame.jpg");
    try {
      const response = await fetch(`${DETECT_URL}?stream=${streamId}&frame=${frameNumber}`, { method: "POST", body });
      const payload = await response.json().catch(() => null);
      if (response.ok && Array.isArray(payload?.numbers)) {
        if (media && !frozen) show(payload.numbers, size);
      } else if (response.status !== 409) {
        const detail = typeof payload?.detail === "string" ? payload.detail : "The service could not read the frame.";
        showMessage(`${detail} (HTTP ${response.status})`, true);
      }
    } catch {
      showMessage("Could not reach the service. Check the connection; frames are sent again automatically.", true);
    } finally {
      inFlight = false;
    }
    if (media && !frozen) schedule(Math.max(0, FRAME_INTERVAL_MS - (performance.now() - started)));
  }

  function show(numbers, size) {
    lastAnswer = { numbers, size };
    draw();
    ui.numbers.replaceChildren(
      ...numbers.map((number) => {
        const item = document.createElement("li");
        item.className = "camera-number";
        item.textContent = number.text;
        item.setAttribute("aria-label", `${number.text}, ${percent.format(number.confidence)} confidence`);
        return item;
      }),
    );
    const count = numbers.length;
    showMessage(count === 0 ? "No number in view." : `${count} number${count === 1 ? "" : "s"} in view: ${numbers.map((n) => n.text).join(", ")}.`, false);
  }

  function draw() {
    const ratio = window.devicePixelRatio || 1;
    const width = ui.overlay.clientWidth;
    const height = ui.overlay.clientHeight;
    ui.overlay.width = Math.round(width * ratio);
    ui.overlay.height = Math.round(height * ratio);
    const context = ui.overlay.getContext("2d");
    context.setTransform(ratio, 0, 0, ratio, 0, 0);
    context.clearRect(0, 0, width, height);
    if (!lastAnswer) return;
    const scale = width / lastAnswer.size.width;
    const accent = getComputedStyle(document.documentElement).getPropertyValue("--accent").trim() || "#2454d6";
    context.lineWidth = 2;
    context.font = "600 16px system-ui, sans-serif";
    context.textBaseline = "bottom";
    for (const number of lastAnswer.numbers) {
      const [x0, y0, x1, y1] = number.box.map((value) => value * scale);
      context.strokeStyle = accent;
      context.strokeRect(x0, y0, x1 - x0, y1 - y0);
      const label = number.text;
      const labelWidth = context.measureText(label).width + 8;
      const top = Math.max(0, y0 - 20);
      context.fillStyle = accent;
      context.fillRect(x0, top, labelWidth, 20);
      context.fillStyle = "#ffffff";
      context.fillText(label, x0 + 4, top + 18);
    }
  }

  ui.start.addEventListener("click", start);
  ui.stop.addEventListener("click", stop);
  ui.freeze.addEventListener("click", () => {
    setFrozen(!frozen);
    if (frozen) {
      ui.video.pause();
      showMessage(`Frozen. ${ui.status.textContent} Press Resume to continue.`, false);
    } else {
      ui.video.play().catch(() => {});
      schedule(0);
    }
  });
  window.addEventListener("resize", draw);
})();
