"""The training loop (``train_one_epoch``, ``evaluate``), calibration and ensembling, and the ``main`` entry point.

``main`` trains the chosen models on one protocol, fits each model's temperature and the ensemble weights on
the validation split, evaluates everything on the test split and publishes each model with its report.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from contract import ModelStore
from contract.device import DeviceUnavailableError, select_device
from contract.ensemble import calibrated_log_probs, ensemble_probs
from training.augment import augment_batch
from training.config import ReaderConfig, TrainConfig, default_recipe, quick_recipe, reference_recipe, same_data
from training.data import DATA_DIR_ENV, Splits, Subset, data_checksums, default_data_dir, load_splits
from training.export import CHECK_IMAGES, git_commit, publish_model
from training.metrics import classification_metrics, fit_ensemble_weights, fit_temperature, metrics_from_probs
from training.models import MODELS, Standardize
from training.reading import READER_NAME, quick_reader_recipe, run_reader
from training.report import render_report

logger = logging.getLogger(__name__)

DEFAULT_STORE = Path("model_store")
# Inference batch for evaluation: large batches are fastest and evaluation needs no gradients.
_EVAL_BATCH_SIZE = 1000
# Summary keys copied from a full metrics dict where the per-class detail would only repeat itself.
_SUMMARY_KEYS = ("accuracy", "macro_precision", "macro_recall", "macro_f1", "log_loss", "ece")


@dataclass
class TrainedModel:
    """A trained network (standardisation included) with its per-epoch history and training time."""

    name: str
    net: nn.Module
    history: list[dict[str, float]]
    seconds: float


def build_network(name: str) -> nn.Module:
    """The named architecture behind a :class:`Standardize` layer, so it takes ``[0, 1]`` pixels."""
    return nn.Sequential(Standardize(), MODELS[name]())


def to_inputs(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 ``(N, 28, 28)`` to float ``(N, 1, 28, 28)`` in ``[0, 1]`` on ``device``."""
    return (images.to(device, non_blocking=True).float() / 255.0).unsqueeze(1)


@contextmanager
def _deterministic(enabled: bool) -> Iterator[None]:
    # CPU kernels have deterministic variants at no cost; CUDA's would need a cuBLAS workspace setting and be slower.
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(enabled or previous)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


def _autocast(device: torch.device) -> torch.autocast:
    # bfloat16 autocast on CUDA needs no gradient scaling; on the CPU everything stays float32 (deterministic).
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def train_one_epoch(
    net: nn.Module,
    data: Subset,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    config: TrainConfig,
    generator: torch.Generator,
    device: torch.device,
    description: str = "",
) -> tuple[float, float]:
    """One pass over ``data`` in a random order with augmented batches; returns mean loss and accuracy."""
    net.train()
    order = torch.randperm(len(data), generator=generator)
    total_loss = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    batches = torch.split(order, config.batch_size)
    for indices in tqdm(batches, desc=description, leave=False, disable=None):
        inputs = augment_batch(to_inputs(data.images[indices], device), config.augment, generator)
        targets = data.labels[indices].to(device, non_blocking=True)
        with _autocast(device):
            logits = net(inputs)
            loss = F.cross_entropy(logits, targets, label_smoothing=config.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total_loss += loss.detach() * len(indices)
        correct += (logits.argmax(dim=1) == targets).sum()
    return float(total_loss) / len(data), float(correct) / len(data)


def predict_logits(net: nn.Module, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """float32 CPU logits ``(N, 10)`` for uint8 images ``(N, 28, 28)``."""
    net.eval()
    outputs = []
    with torch.inference_mode(), _autocast(device):
        for chunk in torch.split(images, _EVAL_BATCH_SIZE):
            outputs.append(net(to_inputs(chunk, device)).float().cpu())
    return torch.cat(outputs)


def evaluate(net: nn.Module, data: Subset, device: torch.device, temperature: float = 1.0) -> dict[str, Any]:
    """Accuracy, macro precision/recall/F1 and the rest of :func:`training.metrics.classification_metrics`."""
    return classification_metrics(predict_logits(net, data.images, device), data.labels, temperature)


def _optimizer(net: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        net.parameters(), lr=config.lr, momentum=0.9, nesterov=True, weight_decay=config.weight_decay
    )


def fit_model(name: str, splits: Splits, config: TrainConfig, device: torch.device) -> TrainedModel:
    """Train ``name`` for ``config.epochs`` epochs and keep the weights of the best validation epoch."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    # NHWC weights: oneDNN's CPU convolutions run about 8 % faster on them (a 1-channel input is NHWC already).
    net = build_network(name).to(device).to(memory_format=torch.channels_last)
    optimizer = _optimizer(net, config)
    steps_per_epoch = -(-len(splits.train) // config.batch_size)
    scheduler = (
        torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=config.lr, epochs=config.epochs, steps_per_epoch=steps_per_epoch
        )
        if config.schedule == "onecycle"
        else None
    )
    parameters = sum(p.numel() for p in net.parameters())
    logger.info("%s: %d parameters, %d training images, device %s", name, parameters, len(splits.train), device)
    history: list[dict[str, float]] = []
    best_state, best_accuracy = copy.deepcopy(net.state_dict()), -1.0
    started = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        epoch_start = time.perf_counter()
        description = f"{name} {epoch}/{config.epochs}"
        train_loss, train_accuracy = train_one_epoch(
            net, splits.train, optimizer, scheduler, config, generator, device, description
        )
        seconds = time.perf_counter() - epoch_start
        validation = evaluate(net, splits.validation, device)
        record = {
            "epoch": float(epoch),
            "train_loss": train_loss,
            "train_accuracy": train_accuracy,
            "val_loss": validation["log_loss"],
            "val_accuracy": validation["accuracy"],
            "seconds": seconds,
            "images_per_second": len(splits.train) / seconds,
        }
        history.append(record)
        logger.info(
            "%s epoch %d/%d: train loss %.4f acc %.2f %%, val loss %.4f acc %.2f %%, %.1f s, %.0f images/s",
            name, epoch, config.epochs, train_loss, 100 * train_accuracy, validation["log_loss"],
            100 * validation["accuracy"], seconds, record["images_per_second"],
        )  # fmt: skip
        # ">=": with a decaying schedule the later of two equally accurate epochs is the better-converged one.
        if validation["accuracy"] >= best_accuracy:
            best_state, best_accuracy = copy.deepcopy(net.state_dict()), validation["accuracy"]
    net.load_state_dict(best_state)
    return TrainedModel(name=name, net=net, history=history, seconds=time.perf_counter() - started)


def _summary(metrics: dict[str, Any]) -> dict[str, Any]:
    return {key: metrics[key] for key in _SUMMARY_KEYS}


def assess(
    models: Sequence[TrainedModel], splits: Splits, device: torch.device
) -> tuple[dict[str, dict[str, Any]], dict[str, Any] | None]:
    """Per-model calibrated metrics, and the ensemble's (None for a single model).

    Temperatures and ensemble weights are fitted on the validation split only; the test split is used once,
    through :mod:`contract.ensemble`, exactly as the service combines the models.
    """
    results: dict[str, dict[str, Any]] = {}
    val_log_probs, test_log_probs = [], []
    for model in models:
        val_logits = predict_logits(model.net, splits.validation.images, device)
        test_logits = predict_logits(model.net, splits.test.images, device)
        temperature = fit_temperature(val_logits, splits.validation.labels)
        val_log_probs.append(calibrated_log_probs(val_logits, temperature))
        test_log_probs.append(calibrated_log_probs(test_logits, temperature))
        results[model.name] = {
            "temperature": temperature,
            "test": classification_metrics(test_logits, splits.test.labels, temperature),
            "test_uncalibrated": _summary(classification_metrics(test_logits, splits.test.labels)),
            "validation": _summary(classification_metrics(val_logits, splits.validation.labels, temperature)),
        }
    if len(models) < 2:
        return results, None
    weights = fit_ensemble_weights(val_log_probs, splits.validation.labels)
    test_metrics = metrics_from_probs(ensemble_probs(test_log_probs, weights), splits.test.labels)
    ensemble: dict[str, Any] = {
        "members": [m.name for m in models],
        "weights": {m.name: w for m, w in zip(models, weights, strict=True)},
        **_summary(test_metrics),
        "validation_accuracy": _summary(
            metrics_from_probs(ensemble_probs(val_log_probs, weights), splits.validation.labels)
        )["accuracy"],
    }
    best_name, best = max(((n, r["test"]["accuracy"]) for n, r in results.items()), key=lambda item: item[1])
    if ensemble["accuracy"] < best:
        ensemble["note"] = (
            f"The ensemble is below {best_name} alone on the test set: the weights were chosen on the validation "
            "split, where the difference between the mixtures is a handful of images, so the choice does not "
            "transfer exactly to the test set."
        )
        logger.warning("%s", ensemble["note"])
    return results, ensemble


def run(
    configs: Mapping[str, TrainConfig],
    data_dir: Path,
    store: ModelStore | None,
    device: torch.device,
) -> dict[str, Any]:
    """Train, assess and (when ``store`` is given) publish each named model with its config; return a summary."""
    if not configs or not same_data(list(configs.values())):
        raise ValueError("the models of one run must be trained on the same images to be ensembled")
    run_start = time.perf_counter()
    config = next(iter(configs.values()))
    splits = load_splits(data_dir, config)
    logger.info(
        "protocol %s: %d train, %d validation, %d test images from %s",
        config.protocol, len(splits.train), len(splits.validation), len(splits.test), data_dir,
    )  # fmt: skip
    with _deterministic(device.type == "cpu"):
        models = [fit_model(name, splits, model_config, device) for name, model_config in configs.items()]
    results, ensemble = assess(models, splits, device)
    summary: dict[str, Any] = {"protocol": config.protocol, "models": {}, "ensemble": ensemble}
    checksums = data_checksums(data_dir) if store is not None else {}
    commit = git_commit(Path(__file__).resolve().parent.parent) if store is not None else None
    check_images = to_inputs(splits.test.images[:CHECK_IMAGES], torch.device("cpu"))
    for model in models:
        result = results[model.name]
        training_config = configs[model.name].to_dict()
        weight = ensemble["weights"][model.name] if ensemble else 1.0
        parameters = sum(p.numel() for p in model.net.parameters())
        metrics: dict[str, Any] = {
            "protocol": config.protocol,
            **{key: result[key] for key in ("test", "test_uncalibrated", "validation")},
            "ensemble": ensemble,
            "history": model.history,
            "train_seconds": model.seconds,
        }
        summary["models"][model.name] = {
            **_summary(result["test"]),
            "parameters": parameters,
            "temperature": result["temperature"],
            "validation_accuracy": result["validation"]["accuracy"],
            "ece_uncalibrated": result["test_uncalibrated"]["ece"],
            "train_seconds": model.seconds,
        }
        if store is None:
            continue
        report = render_report(
            model.name,
            test_metrics=result["test"],
            raw_test_metrics=result["test_uncalibrated"],
            history=model.history,
            training_config=training_config,
            parameters=parameters,
            temperature=result["temperature"],
            ensemble=ensemble,
            train_seconds=model.seconds,
        )
        manifest = publish_model(
            store, model.name, model.net, check_images,
            temperature=result["temperature"], ensemble_weight=weight, metrics=metrics,
            training_config=training_config, data_checksums=checksums, commit=commit, extra_files=report,
        )  # fmt: skip
        summary["models"][model.name].update(version=manifest.version, size_bytes=manifest.size_bytes)
    summary["wall_seconds"] = time.perf_counter() - run_start
    for name, row in summary["models"].items():
        logger.info(
            "%s: test accuracy %.2f %%, macro F1 %.2f %%, ECE %.4f (T=%.2f), %d parameters, %.0f s",
            name, 100 * row["accuracy"], 100 * row["macro_f1"], row["ece"], row["temperature"],
            row["parameters"], row["train_seconds"],
        )  # fmt: skip
    if ensemble:
        logger.info("ensemble %s: test accuracy %.2f %%", ensemble["weights"], 100 * ensemble["accuracy"])
    logger.info("total wall time %.0f s", summary["wall_seconds"])
    return summary


def build_parser() -> argparse.ArgumentParser:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(
        prog="digits-train",
        description="Train MNIST classifiers and publish them into the model store as the next version.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--models",
        nargs="+",
        choices=[*sorted(MODELS), READER_NAME],
        default=[*MODELS, READER_NAME],
        help=f"what to train: digit classifiers and the line reader ({READER_NAME})",
    )
    parser.add_argument(
        "--protocol",
        choices=["standard", "seed"],
        default=defaults.protocol,
        help="standard: 55k/5k/10k official split; seed: the official test set split 7:3",
    )
    parser.add_argument(
        "--recipe",
        choices=["default", "reference"],
        default="default",
        help="reference: Adam 1e-3, batch 32, 10 epochs, no schedule/smoothing/augmentation",
    )
    parser.add_argument("--epochs", type=int, help=f"override the recipe (default {defaults.epochs})")
    parser.add_argument("--batch-size", type=int, help=f"override the recipe (default {defaults.batch_size})")
    parser.add_argument("--lr", type=float, help=f"peak learning rate (default {defaults.lr})")
    parser.add_argument("--optimizer", choices=["adam", "adamw", "sgd"], help="override the recipe (default adam)")
    parser.add_argument("--weight-decay", type=float, help="override the recipe (default 0)")
    parser.add_argument("--schedule", choices=["onecycle", "constant"], help="override the recipe (default onecycle)")
    parser.add_argument("--label-smoothing", type=float, help=f"default {defaults.label_smoothing}")
    parser.add_argument("--no-augment", action="store_true", help="train on the images as they are")
    parser.add_argument("--elastic", action="store_true", help="add elastic distortion to the affine warps")
    parser.add_argument("--hflip", action="store_true", help="random horizontal flips (wrong for digits)")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help=f"MNIST IDX files (default: ${DATA_DIR_ENV}, ../shared/data/mnist or a cache dir)",
    )
    parser.add_argument(
        "--store",
        type=Path,
        default=None,
        help=f"model store root (default {DEFAULT_STORE}; --dry-run publishes only when given)",
    )
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="CPU threads for torch (0: one per core); 1 is faster on a machine busy with other work",
    )
    parser.add_argument("--limit", type=int, help="class-balanced cap on the training images")
    parser.add_argument(
        "--reader-steps",
        type=int,
        help=f"line reader training batches (default {ReaderConfig().steps}; 0 with --reader-init-from: calibrate "
        "that reader again and publish it as the next version)",
    )
    parser.add_argument("--reader-lr", type=float, help=f"line reader peak learning rate (default {ReaderConfig().lr})")
    parser.add_argument(
        "--reader-init-from", metavar="NAME:VERSION", help="start the line reader from a published reader's weights"
    )
    parser.add_argument(
        "--reader-widths", type=int, nargs=4, metavar="C",
        help=f"line reader convolution channels, four stages (default {' '.join(map(str, ReaderConfig().widths))})",
    )  # fmt: skip
    parser.add_argument(
        "--reader-hidden", type=int, help=f"line reader LSTM units per direction (default {ReaderConfig().hidden})"
    )
    parser.add_argument("--dry-run", "--quick", action="store_true", help="quick mode: 2,000 images, one epoch")
    parser.add_argument("--no-publish", action="store_true", help="train and evaluate only")
    parser.add_argument("--metrics-out", type=Path, help="also write the summary as JSON here")
    return parser


def config_from_args(args: argparse.Namespace, model: str) -> TrainConfig:
    """``model``'s config: the recipe named by ``--recipe`` with the explicit overrides applied."""
    config = TrainConfig(protocol=args.protocol, seed=args.seed)
    config = reference_recipe(config) if args.recipe == "reference" else default_recipe(config, model)
    if args.dry_run:
        config = quick_recipe(config)
    overrides = {
        field: getattr(args, field)
        for field in ("epochs", "batch_size", "lr", "optimizer", "weight_decay", "schedule", "label_smoothing", "limit")
        if getattr(args, field) is not None
    }
    augment = dataclasses.replace(
        config.augment,
        enabled=config.augment.enabled and not args.no_augment,
        elastic=config.augment.elastic or args.elastic,
        hflip=config.augment.hflip or args.hflip,
    )
    return dataclasses.replace(config, augment=augment, **overrides)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    configs = {name: config_from_args(args, name) for name in dict.fromkeys(args.models) if name in MODELS}
    publish = not args.no_publish and (args.store is not None or not args.dry_run)
    store = ModelStore(args.store or DEFAULT_STORE) if publish else None
    data_dir = args.data_dir or default_data_dir()
    try:
        device = select_device(args.device)
    except DeviceUnavailableError as exc:
        raise SystemExit(f"--device cuda: {exc}") from None
    summary: dict[str, Any] = run(configs, data_dir, store, device) if configs else {}
    if READER_NAME in args.models:
        reader_config = reader_config_from_args(args)
        reader_summary = run_reader(reader_config, data_dir, store, device)
        summary[READER_NAME] = {"config": reader_config.to_dict(), **reader_summary}
    if args.metrics_out:
        configs_dict = {name: config.to_dict() for name, config in configs.items()}
        args.metrics_out.write_text(json.dumps({"configs": configs_dict, **summary}, indent=2, default=float))
    return 0


def reader_config_from_args(args: argparse.Namespace) -> ReaderConfig:
    """The line reader's config: the default (or quick) recipe with the seed, limit and step overrides."""
    config = ReaderConfig(seed=args.seed)
    if args.dry_run:
        config = quick_reader_recipe(config)
    overrides = {
        "steps": args.reader_steps,
        "limit": args.limit,
        "lr": args.reader_lr,
        "init_from": args.reader_init_from,
        "widths": tuple(args.reader_widths) if args.reader_widths else None,
        "hidden": args.reader_hidden,
    }
    return dataclasses.replace(config, **{key: value for key, value in overrides.items() if value is not None})


if __name__ == "__main__":
    raise SystemExit(main())
