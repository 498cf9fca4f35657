"""Training of the line reader: synthetic lines from MNIST training digits, CTC, calibration and publication.

Lines are composed on the fly (:mod:`training.synthetic_lines`) from the training split's digits and normalised by
:func:`imaging.lines.normalise_ink`, the service's own step. Model selection and calibration use lines composed
from the validation hold-out (digits the network never trains on; MNIST records no writer ids); the test metrics
in the manifest come from lines of MNIST test digits, read once after training.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from contract import LINE_READER, Manifest, ModelStore
from contract.ctc import DecodedLine, encode_targets, greedy_decode
from contract.torchscript import load_torchscript
from imaging.lines import normalise_ink
from training.config import ReaderConfig
from training.data import Subset, data_checksums, load_mnist, stratified_split
from training.export import git_commit, publish_model
from training.models import LineReader
from training.synthetic_lines import (
    MAX_DIGITS,
    LineVariation,
    Spacing,
    compose_line,
    crop_glyph,
    draw_line_spacings,
)

logger = logging.getLogger(__name__)

READER_NAME = "reader"
# The validation lines: enough for exact-match differences of about a point to show, cheap to read.
_EVAL_BATCH_LINES = 256
# Temperatures tried when calibrating the whole-string confidence.
_TEMPERATURES = np.round(np.arange(0.1, 3.01, 0.05), 2)
# Lines are generated this many batches at a time, sorted by width and cut into batches, so little is padding.
_BUCKET_BATCHES = 4


@dataclass(frozen=True)
class Line:
    """One normalised strip and its text; ``touching`` when no two neighbouring digits are apart."""

    pixels: np.ndarray
    text: str
    spacings: tuple[Spacing, ...]

    @property
    def touching(self) -> bool:
        return bool(self.spacings) and "apart" not in self.spacings


class LineSource:
    """Composes random lines from one set of digits (cropped once), seeded."""

    def __init__(self, digits: Subset, variation: LineVariation, config: ReaderConfig) -> None:
        self.glyphs = [crop_glyph(image) for image in digits.images.numpy()]
        self.labels = digits.labels.numpy()
        self.variation = variation
        self.style_weights = config.line_style_weights
        self.spacing_weights = config.spacing_weights

    def line(self, rng: np.random.Generator, length: int | None = None) -> Line:
        count = int(rng.integers(1, MAX_DIGITS + 1)) if length is None else length
        chosen = rng.integers(0, len(self.glyphs), count)
        spacings = draw_line_spacings(count - 1, rng, self.style_weights, self.spacing_weights)
        ink = compose_line([self.glyphs[i] for i in chosen], spacings, rng, self.variation)
        text = "".join(str(int(self.labels[i])) for i in chosen)
        return Line(normalise_ink(ink).pixels, text, tuple(spacings))

    def lines(self, count: int, seed: int) -> list[Line]:
        rng = np.random.default_rng(seed)
        return [self.line(rng) for _ in range(count)]


def batch_strips(strips: Sequence[np.ndarray], frame_pixels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-padded ``(N, 1, 32, W_max)`` input and each strip's frame count ``(N,)`` at ``frame_pixels`` columns a
    frame."""
    width = max(strip.shape[1] for strip in strips)
    batch = torch.zeros(len(strips), 1, strips[0].shape[0], width)
    for row, strip in enumerate(strips):
        batch[row, 0, :, : strip.shape[1]] = torch.from_numpy(strip)
    frames = torch.tensor([strip.shape[1] // frame_pixels for strip in strips])
    return batch, frames


def _augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Fainter ink and a little noise, as backgrounds removed from photos leave it."""
    n = batch.shape[0]
    gain = 0.7 + 0.3 * torch.rand(n, 1, 1, 1, generator=generator)
    sigma = 0.04 * torch.rand(n, 1, 1, 1, generator=generator)
    noise = sigma * torch.randn(batch.shape, generator=generator)
    return (batch * gain + noise * (batch > 0)).clamp(0.0, 1.0)


def _training_batches(source: LineSource, config: ReaderConfig, rng: np.random.Generator) -> Iterator[list[Line]]:
    while True:
        lines = [source.line(rng) for _ in range(config.batch_size * _BUCKET_BATCHES)]
        lines.sort(key=lambda line: line.pixels.shape[1])
        batches = [lines[i : i + config.batch_size] for i in range(0, len(lines), config.batch_size)]
        for index in rng.permutation(len(batches)):
            yield batches[int(index)]


def ctc_loss(logits: torch.Tensor, frames: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
    """Mean CTC loss per line of ``(N, T, 11)`` logits against the digit strings."""
    log_probs = F.log_softmax(logits, dim=2).transpose(0, 1)  # (T, N, 11)
    targets = torch.tensor([index for text in texts for index in encode_targets(text)], device=logits.device)
    lengths = torch.tensor([len(text) for text in texts])
    return F.ctc_loss(log_probs, targets, frames, lengths, blank=0, reduction="mean", zero_infinity=True)


def read_logits(net: LineReader, strips: Sequence[np.ndarray]) -> list[torch.Tensor]:
    """Each strip's ``(T_i, 11)`` logits (on the CPU), the strips batched by width on the network's device."""
    net.eval()
    device = next(net.parameters()).device
    order = sorted(range(len(strips)), key=lambda i: strips[i].shape[1])
    results: list[torch.Tensor] = [torch.empty(0)] * len(strips)
    with torch.inference_mode():
        for start in range(0, len(order), _EVAL_BATCH_LINES):
            chunk = order[start : start + _EVAL_BATCH_LINES]
            batch, frames = batch_strips([strips[i] for i in chunk], net.frame_pixels)
            logits = net(batch.to(device)).cpu()
            for row, index in enumerate(chunk):
                results[index] = logits[row, : int(frames[row])].clone()
    return results


def decode_all(logits: Sequence[torch.Tensor], temperature: float = 1.0) -> list[DecodedLine]:
    return [greedy_decode(F.log_softmax(item / temperature, dim=1)) for item in logits]


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions and substitutions all cost 1)."""
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def reading_metrics(predicted: Sequence[str], truth: Sequence[str]) -> dict[str, float]:
    """Exact match (whole string right) and digit accuracy (1 - character error rate)."""
    errors = sum(edit_distance(p, t) for p, t in zip(predicted, truth, strict=True))
    return {
        "lines": float(len(truth)),
        "exact_match": sum(p == t for p, t in zip(predicted, truth, strict=True)) / max(len(truth), 1),
        "digit_accuracy": 1.0 - errors / max(sum(len(t) for t in truth), 1),
    }


def fit_string_temperature(logits: Sequence[torch.Tensor], truth: Sequence[str]) -> float:
    """The temperature whose best-path probability best predicts whether the string is right (log loss)."""
    best_temperature, best_loss = 1.0, math.inf
    for temperature in _TEMPERATURES:
        decoded = decode_all(logits, float(temperature))
        confidence = np.clip([line.path_probability for line in decoded], 1e-6, 1 - 1e-6)
        correct = np.array([line.text == text for line, text in zip(decoded, truth, strict=True)])
        loss = float(-np.mean(np.where(correct, np.log(confidence), np.log1p(-confidence))))
        if loss < best_loss:
            best_temperature, best_loss = float(temperature), loss
    return best_temperature


def fit_string_calibration(decoded: Sequence[DecodedLine], truth: Sequence[str]) -> tuple[float, float]:
    """Logistic regression (Platt 1999) of "the string is right" on the log of each line's path probability: the
    ``(slope, intercept)`` of :meth:`contract.ctc.DecodedLine.confidence`, by maximum likelihood."""
    log_probability = torch.tensor([line.log_path_probability for line in decoded], dtype=torch.float64)
    right = torch.tensor([line.text == text for line, text in zip(decoded, truth, strict=True)], dtype=torch.float64)
    weights = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weights], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.binary_cross_entropy_with_logits(weights[0] * log_probability + weights[1], right)
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    optimizer.step(closure)  # type: ignore[no-untyped-call]
    slope, intercept = weights.detach().tolist()
    return float(slope), float(intercept)


def expected_calibration_error(confidence: Sequence[float], correct: Sequence[bool], bins: int = 10) -> float:
    """ECE of a binary prediction over equal-width confidence bins."""
    conf, hit = np.asarray(confidence), np.asarray(correct, dtype=np.float64)
    index = np.minimum((conf * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        members = index == b
        if members.any():
            total += members.sum() * abs(conf[members].mean() - hit[members].mean())
    return total / max(len(conf), 1)


def evaluate_lines(
    net: LineReader, lines: Sequence[Line], temperature: float, calibration: tuple[float, float] | None = None
) -> dict[str, Any]:
    logits = read_logits(net, [line.pixels for line in lines])
    decoded = decode_all(logits, temperature)
    predicted = [line.text for line in decoded]
    truth = [line.text for line in lines]
    correct = [p == t for p, t in zip(predicted, truth, strict=True)]
    touching = [i for i, line in enumerate(lines) if line.touching]
    apart = [i for i, line in enumerate(lines) if "apart" in line.spacings and set(line.spacings) == {"apart"}]
    return {
        **reading_metrics(predicted, truth),
        "touching": reading_metrics([predicted[i] for i in touching], [truth[i] for i in touching]),
        "apart": reading_metrics([predicted[i] for i in apart], [truth[i] for i in apart]),
        "string_confidence_ece": expected_calibration_error([d.confidence(calibration) for d in decoded], correct),
        "path_probability_ece": expected_calibration_error([d.path_probability for d in decoded], correct),
    }


def train_reader(
    train: LineSource,
    validation: Sequence[Line],
    config: ReaderConfig,
    initial_state: Mapping[str, torch.Tensor] | None,
    device: torch.device,
) -> tuple[LineReader, list[dict[str, float]], float]:
    """Train for ``config.steps`` batches on ``device`` (from ``initial_state`` when given); keep the weights with
    the best validation exact match. Lines are composed on the CPU; the network comes back on the CPU."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    net = LineReader(config.frame_pixels, config.widths, config.hidden)
    if initial_state is not None:
        net.load_state_dict(initial_state)
    net.to(device)
    if config.steps == 0:
        return net.cpu(), [], 0.0
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=config.steps)
    history: list[dict[str, float]] = []
    best_state, best_score = copy.deepcopy(net.state_dict()), -1.0
    started = time.perf_counter()
    running = 0.0
    batches = _training_batches(train, config, rng)
    for step in range(1, config.steps + 1):
        net.train()
        lines = next(batches)
        batch, frames = batch_strips([line.pixels for line in lines], net.frame_pixels)
        loss = ctc_loss(net(_augment(batch, generator).to(device)), frames, [line.text for line in lines])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        nn.utils.clip_grad_norm_(net.parameters(), config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        running += loss.item()
        if step % config.eval_every == 0 or step == config.steps:
            metrics = evaluate_lines(net, validation, 1.0)
            record = {
                "step": float(step),
                "train_loss": running / (step - (history[-1]["step"] if history else 0)),
                "val_exact_match": metrics["exact_match"],
                "val_digit_accuracy": metrics["digit_accuracy"],
                "seconds": time.perf_counter() - started,
            }
            running = 0.0
            history.append(record)
            logger.info(
                "reader step %d/%d: loss %.4f, validation exact %.2f %%, digits %.2f %%, %.0f s",
                step, config.steps, record["train_loss"], 100 * record["val_exact_match"],
                100 * record["val_digit_accuracy"], record["seconds"],
            )  # fmt: skip
            score = metrics["exact_match"] + metrics["digit_accuracy"]
            if score >= best_score:
                best_state, best_score = copy.deepcopy(net.state_dict()), score
    net.load_state_dict(best_state)
    return net.cpu(), history, time.perf_counter() - started


def run_reader(config: ReaderConfig, data_dir: Path, store: ModelStore | None, device: torch.device) -> dict[str, Any]:
    """Train (on ``device``), calibrate and test the reader; publish it when ``store`` is given; return a
    summary."""
    run_start = time.perf_counter()
    pool = Subset(*load_mnist(data_dir, "train"))
    keep, held = stratified_split(pool.labels, config.validation_size, config.seed)
    train_digits = pool.take(keep).limited(config.limit, config.seed)
    variation = LineVariation()
    train = LineSource(train_digits, variation, config)
    validation = LineSource(pool.take(held), variation, config).lines(config.validation_lines, 1)
    initial_state = None
    if config.steps == 0 and config.init_from is None:
        raise ValueError("0 steps re-calibrates and republishes a published reader: name it with init_from")
    if config.init_from is not None:
        if store is None:
            raise ValueError("starting from a published reader needs the store it is in")
        initial_state = published_state(store, config.init_from, config.seed)
    net, history, seconds = train_reader(train, validation, config, initial_state, device)
    validation_logits = read_logits(net, [line.pixels for line in validation])
    truth = [line.text for line in validation]
    temperature = fit_string_temperature(validation_logits, truth)
    calibration = fit_string_calibration(decode_all(validation_logits, temperature), truth)
    test_source = LineSource(Subset(*load_mnist(data_dir, "test")), variation, config)
    test = test_source.lines(config.validation_lines, 2)
    metrics: dict[str, Any] = {
        # The temperature and the string calibration are fitted on these lines: their ECE is in-sample.
        "validation": evaluate_lines(net, validation, temperature, calibration),
        "test_composed_mnist": evaluate_lines(net, test, temperature, calibration),
        "history": history,
        "train_seconds": seconds,
    }
    logger.info(
        "reader: composed MNIST test lines exact %.2f %%, digits %.2f %% (T=%.2f), %.0f s of training",
        100 * metrics["test_composed_mnist"]["exact_match"], 100 * metrics["test_composed_mnist"]["digit_accuracy"],
        temperature, seconds,
    )  # fmt: skip
    summary: dict[str, Any] = {"temperature": temperature, "string_calibration": calibration, **metrics}
    if store is not None:
        manifest = publish_reader(store, net, test, temperature, calibration, metrics, config, data_dir)
        summary.update(version=manifest.version, size_bytes=manifest.size_bytes)
    summary["wall_seconds"] = time.perf_counter() - run_start
    return summary


def published_state(store: ModelStore, reference: str, seed: int) -> dict[str, torch.Tensor]:
    """The weights of a published reader (``"name:version"``), read through the store's checksum.

    The seed picks the validation hold-out, so a run continuing another must keep its seed: with another, the new
    validation lines would hold digits the published weights trained on.
    """
    name, _, version = reference.partition(":")
    if not version.isdigit():
        raise ValueError(f"{reference!r} is not name:version")
    verified = store.read_verified(name, int(version))
    trained_seed = verified.manifest.training_config.get("seed")
    if trained_seed != seed:
        raise ValueError(f"{reference} was trained with --seed {trained_seed}: continue it with the same seed")
    scripted = load_torchscript(verified.model_bytes)
    return {key: value.clone() for key, value in scripted.state_dict().items()}


def publish_reader(
    store: ModelStore,
    net: LineReader,
    check_lines: Sequence[Line],
    temperature: float,
    string_calibration: tuple[float, float],
    metrics: dict[str, Any],
    config: ReaderConfig,
    data_dir: Path,
) -> Manifest:
    """Export with the parity check on a padded batch of test lines and publish as the next ``reader`` version."""
    check_batch, _ = batch_strips([line.pixels for line in check_lines[:64]], net.frame_pixels)
    return publish_model(
        store, READER_NAME, net, check_batch,
        temperature=temperature, string_calibration=string_calibration, ensemble_weight=0.0, metrics=metrics,
        training_config=config.to_dict(),
        data_checksums=data_checksums(data_dir), commit=git_commit(Path(__file__).resolve().parent.parent),
        extra_files={}, signature=LINE_READER, frame_pixels=net.frame_pixels,
    )  # fmt: skip


def quick_reader_recipe(config: ReaderConfig) -> ReaderConfig:
    """The smoke-test mode: 20 steps on a small subset; it reads nothing yet but runs every stage in seconds."""
    return dataclasses.replace(config, steps=20, eval_every=20, limit=1000, validation_lines=60)
