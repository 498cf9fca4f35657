"""The model cost benchmark times every classifier and every digit check version in a store, and nothing else."""

from __future__ import annotations

import json
from pathlib import Path

from bench.model_cost import FULL_BATCH, main
from contract import ModelStore
from tests.support.stand_ins import MODEL_NAMES, publish, publish_check


def test_every_version_of_every_28x28_network_is_timed(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    for name in MODEL_NAMES:
        publish(store, name)
    publish(store, MODEL_NAMES[0])
    publish_check(store)
    out = tmp_path / "cost.json"

    main(["--store", str(store.root), "--rounds", "2", "--repeats", "2", "--out", str(out)])

    models = json.loads(out.read_text())["models"]
    assert set(models) == {f"{name} v1" for name in MODEL_NAMES} | {f"{MODEL_NAMES[0]} v2", "check v1"}
    for row in models.values():
        assert row["batch_1_ms"] > 0
        assert row["per_image_us"] == 1e3 * row[f"batch_{FULL_BATCH}_ms"] / FULL_BATCH
