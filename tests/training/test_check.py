"""The digit check's trainer: threshold choice, the trade-off table, and a short real run published into a store."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from contract import CHECK_CLASSES, CONFIG_FILE, ModelStore
from contract.torchscript import load_torchscript
from training.check import (
    CHECK_NETWORKS,
    NOT_A_DIGIT,
    ONE_DIGIT,
    SEVERAL_DIGITS,
    STORE_NAME,
    CheckData,
    build_check_data,
    build_check_network,
    check_config,
    choose_part_threshold,
    choose_threshold,
    part_rates,
    run_check,
    trade_off,
)
from training.data import default_data_dir
from training.upload_styles import CHECK_STYLES

# The validation split's parts: each kind as drawn, and the digits, numbers and glyphs sent in every upload style.
VALIDATION_PARTS = {"digits", "numbers", "glyphs", "scribbles"} | {
    f"{kind}, {style}" for kind in ("digits", "numbers", "glyphs") for style in CHECK_STYLES
}


@pytest.mark.parametrize("network", sorted(CHECK_NETWORKS))
def test_every_backbone_gives_one_logit_per_check_class(network: str) -> None:
    net = build_check_network(network).eval()

    with torch.inference_mode():
        logits = net(torch.rand(4, 1, 28, 28))

    assert logits.shape == (4, len(CHECK_CLASSES))


def test_threshold_lets_the_requested_share_of_digits_through() -> None:
    scores = torch.linspace(0.001, 1.0, 1000)

    threshold = choose_threshold(scores, pass_rate=0.99)

    assert float((scores >= threshold).double().mean()) == pytest.approx(0.99, abs=1e-3)
    assert choose_threshold(scores, pass_rate=1.0) == pytest.approx(0.001)


def test_part_threshold_is_set_by_the_weakest_kind_of_digit() -> None:
    # 100 plain digits scoring 0.5-1.0 and 100 1-bit digits scoring 0.01-1.0; the numbers' low scores do not count.
    scores = torch.cat([torch.linspace(0.5, 1.0, 100), torch.linspace(0.01, 1.0, 100), torch.full((10,), 0.001)])
    labels = torch.cat([torch.full((200,), ONE_DIGIT), torch.full((10,), SEVERAL_DIGITS)])
    parts = ["digits"] * 100 + ["digits, bilevel"] * 100 + ["numbers"] * 10

    threshold = choose_part_threshold(scores, labels, parts, pass_rate=0.95)

    assert threshold == pytest.approx(choose_threshold(scores[100:200], pass_rate=0.95))
    assert float((scores[100:200] >= threshold).double().mean()) == pytest.approx(0.95)
    assert float((scores[:100] >= threshold).double().mean()) == 1.0


def test_trade_off_counts_passes_and_flags_per_class() -> None:
    scores = torch.tensor([0.9, 0.8, 0.2, 0.7, 0.1, 0.05])
    labels = torch.tensor([ONE_DIGIT, ONE_DIGIT, ONE_DIGIT, SEVERAL_DIGITS, SEVERAL_DIGITS, NOT_A_DIGIT])

    (row,) = trade_off(scores, labels, [0.5])

    assert row == {"threshold": 0.5, "digits_passed": 2 / 3, "several_flagged": 0.5, "not_digit_flagged": 1.0}


def test_part_rates_count_passes_for_digits_and_flags_for_the_rest() -> None:
    scores = torch.tensor([0.9, 0.1, 0.8, 0.2, 0.3])
    labels = torch.tensor([ONE_DIGIT, ONE_DIGIT, SEVERAL_DIGITS, NOT_A_DIGIT, NOT_A_DIGIT])
    parts = ["digits", "digits", "numbers", "letters", "letters"]

    assert part_rates(scores, labels, parts, threshold=0.5) == {"digits": 0.5, "numbers": 0.0, "letters": 1.0}


def test_check_data_holds_every_kind_for_training_and_validation() -> None:
    data = build_check_data(check_config(seed=0), default_data_dir(), scale=0.01)

    for subset in (data.train, data.validation):
        assert subset.images.shape[1:] == (28, 28) and subset.images.dtype == torch.uint8
        assert set(subset.labels.tolist()) == {ONE_DIGIT, SEVERAL_DIGITS, NOT_A_DIGIT}
    assert len(data.validation_parts) == len(data.validation)
    assert set(data.validation_parts) == VALIDATION_PARTS


def test_members_hold_out_the_first_seeds_validation_digits() -> None:
    first = build_check_data(check_config(seed=0), default_data_dir(), scale=0.01)
    member = build_check_data(check_config(seed=1), default_data_dir(), scale=0.01, split_seed=0)
    own_split = build_check_data(check_config(seed=1), default_data_dir(), scale=0.01)

    def held_digits(data: CheckData) -> torch.Tensor:
        return data.validation.images[: data.validation_parts.count("digits")]

    assert torch.equal(held_digits(member), held_digits(first))
    assert not torch.equal(held_digits(own_split), held_digits(first))
    # The member's own draws still differ from the first seed's.
    assert not torch.equal(member.train.images[:100], first.train.images[:100])


def test_short_run_publishes_a_calibrated_ensemble_of_checks(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    config = dataclasses.replace(check_config(seed=3), epochs=1)

    summary = run_check(config, default_data_dir(), store, torch.device("cpu"), scale=0.01, members=2)
    assert summary["network"] == "cnn"
    assert [member["seed"] for member in summary["members"]] == [3, 4]
    assert set(summary["validation"]["parts"]) == VALIDATION_PARTS

    verified = store.read_verified(STORE_NAME, 1)
    manifest = verified.manifest
    assert manifest.kind == "digit_check"
    assert manifest.output.dims == [len(CHECK_CLASSES)]
    assert manifest.pass_threshold == summary["pass_threshold"]
    assert manifest.metrics["validation"]["at_threshold"]["digits_passed"] >= 0.99
    assert "dims: [ 3 ]" in (store.root / STORE_NAME / CONFIG_FILE).read_text()
    with torch.inference_mode():
        logits = load_torchscript(verified.model_bytes)(torch.zeros(2, 1, 28, 28))
    assert logits.shape == (2, len(CHECK_CLASSES))


def test_a_check_needs_a_member() -> None:
    with pytest.raises(ValueError, match="at least one member"):
        run_check(check_config(seed=0), default_data_dir(), None, torch.device("cpu"), scale=0.01, members=0)
