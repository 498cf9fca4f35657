"""The classic design: a Flask app under gunicorn's sync workers, one request at a time per worker, no batching.

``POST /predict`` takes the multipart ``file``, runs :class:`bench.peers.pipeline.DigitPipeline` on it and
answers with each model's label and probabilities and the ensemble; ``GET /health/ready`` says the worker is up.
``python -m bench.peers.flask_app`` replaces itself with gunicorn on ``DIGITS_HOST:DIGITS_PORT``, one worker per
core, each loading the models after the fork with one torch thread.
"""

from __future__ import annotations

import os
import sys

import torch
from flask import Flask, Response, jsonify, request

from bench.peers.pipeline import DigitPipeline
from imaging.errors import ImagingError
from service.config import get_settings


def create_app() -> Flask:
    """The app of one gunicorn worker (gunicorn calls this factory in each worker)."""
    # One thread per worker process: the workers themselves use the cores.
    torch.set_num_threads(1)
    pipeline = DigitPipeline.from_settings()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = get_settings().max_upload_bytes

    @app.post("/predict")
    def predict() -> tuple[Response, int]:
        upload = request.files.get("file")
        if upload is None:
            return jsonify(detail="Send the image as the multipart form field 'file'."), 422
        try:
            image = pipeline.prepare(upload.read())
        except ImagingError:
            return jsonify(detail="The upload is not a usable image of a digit; send a PNG or JPEG of one digit."), 400
        return jsonify(pipeline.predict([image])[0]), 200

    @app.get("/health/ready")
    def ready() -> Response:
        return jsonify(status="ready")

    return app


def main() -> None:
    settings = get_settings()
    workers = os.cpu_count() or 1
    command = [sys.executable, "-m", "gunicorn", "--worker-class", "sync", "--workers", str(workers)]
    # gunicorn's control socket defaults to one path per user: off, so several peers and tests can run at once.
    command += ["--no-control-socket"]
    command += ["--bind", f"{settings.host}:{settings.port}", "bench.peers.flask_app:create_app()"]
    os.execv(sys.executable, command)


if __name__ == "__main__":
    main()
