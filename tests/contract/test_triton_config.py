"""Every ``config.pbtxt`` in the committed store read with Triton's own schema (``ModelConfig`` from tritonclient):
it parses, follows the PyTorch backend's naming rule for the scripted ``forward``, matches what the model files
compute, and batches as the service does by default."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from contract import CONFIG_FILE, ModelStore
from contract.store import signature_of, triton_config
from contract.torchscript import load_torchscript
from harness.server import REPO_ROOT
from service.config import Settings

COMMITTED = ModelStore(REPO_ROOT / "model_store")
MODEL_NAMES = COMMITTED.model_names()
# The PyTorch backend binds a tensor named <anything>__<index> to the index-th argument (or output) of forward.
_INDEXED_NAME = re.compile(r"^.+__(\d+)$")
_TYPE_FP32 = model_config_pb2.DataType.Value("TYPE_FP32")
# A line reader's variable width, in the shape checks below (16 frames).
_LINE_WIDTH = 64


def default(setting: str) -> float:
    """The service's default for ``setting`` (the environment of the test run plays no part)."""
    value: float = Settings.model_fields[setting].default
    return value


def parsed_config(name: str) -> model_config_pb2.ModelConfig:
    text = (COMMITTED.model_dir(name) / CONFIG_FILE).read_text()
    # Parse is strict: an unknown field, a misspelt enum or a wrong type raises ParseError.
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def concrete(dims: list[int], frames: int = 0) -> list[int]:
    """``dims`` with a variable input width as 64 columns, or a variable output length as ``frames``."""
    return [dim if dim > 0 else (_LINE_WIDTH if index == len(dims) - 1 else frames) for index, dim in enumerate(dims)]


def manifest_dims(name: str) -> tuple[list[int], list[int]]:
    manifest = COMMITTED.read_manifest(name, COMMITTED.resolve(name))
    return manifest.input.dims, manifest.output.dims


def scripted(name: str) -> torch.jit.ScriptModule:
    verified = COMMITTED.read_verified(name, COMMITTED.resolve(name))
    return load_torchscript(verified.model_bytes).eval()


def test_the_committed_store_has_every_model() -> None:
    assert MODEL_NAMES == ["check", "cnn", "lenet5", "mlp", "reader"]
    assert COMMITTED.model_names("digit_check") == ["check"]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_committed_config_is_the_generated_one(name: str) -> None:
    manifest = COMMITTED.read_manifest(name, COMMITTED.resolve(name))
    assert (COMMITTED.model_dir(name) / CONFIG_FILE).read_text() == triton_config(name, signature_of(manifest))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_config_parses_with_tritons_model_config_schema(name: str) -> None:
    config = parsed_config(name)

    assert config.name == name == Path(COMMITTED.model_dir(name)).name
    assert config.platform == "pytorch_libtorch"
    input_dims, output_dims = manifest_dims(name)
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [("input__0", _TYPE_FP32, input_dims)]
    assert [(t.name, t.data_type, list(t.dims)) for t in config.output] == [("output__0", _TYPE_FP32, output_dims)]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_tensor_names_follow_the_pytorch_backend_rule_for_the_scripted_forward(name: str) -> None:
    schema = scripted(name).forward.schema
    arguments = [argument.name for argument in schema.arguments if argument.name != "self"]
    config = parsed_config(name)

    for position, tensor in enumerate(config.input):
        match = _INDEXED_NAME.match(tensor.name)
        assert tensor.name in arguments or (match is not None and int(match.group(1)) == position)
    assert len(config.input) == len(arguments)
    assert [str(result.type) for result in schema.returns] == ["Tensor"]
    assert [_INDEXED_NAME.match(tensor.name) is not None for tensor in config.output] == [True]
    assert int(_INDEXED_NAME.match(config.output[0].name).group(1)) == 0  # type: ignore[union-attr]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_file_has_the_configured_shapes_at_batch_1_and_max_batch_size(name: str) -> None:
    config = parsed_config(name)
    module = scripted(name)
    frames = _LINE_WIDTH // COMMITTED.read_manifest(name, COMMITTED.resolve(name)).frame_pixels

    for batch in (1, config.max_batch_size):
        with torch.inference_mode():
            logits = module(torch.rand((batch, *concrete(list(config.input[0].dims)))))
        assert list(logits.shape) == [batch, *concrete(list(config.output[0].dims), frames)]
        assert logits.dtype == torch.float32


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_triton_batches_and_warms_up_as_the_service_does_by_default(name: str) -> None:
    config = parsed_config(name)
    max_batch_size = default("max_batch_size")

    assert list(config.dynamic_batching.preferred_batch_size) == [max_batch_size]
    assert config.dynamic_batching.max_queue_delay_microseconds == default("max_batch_wait_ms") * 1000
    assert config.dynamic_batching.default_queue_policy.max_queue_size == default("queue_max_size")
    assert config.max_batch_size >= max_batch_size
    # The service warms up at batch 1 and its batch size (service.state), on random images.
    assert [warmup.batch_size for warmup in config.model_warmup] == [1, max_batch_size]
    for warmup in config.model_warmup:
        assert set(warmup.inputs) == {"input__0"}
        assert warmup.inputs["input__0"].random_data
        assert list(warmup.inputs["input__0"].dims) == concrete(list(config.input[0].dims))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_version_policy_serves_the_latest_version_as_the_service_does(name: str) -> None:
    config = parsed_config(name)

    assert config.version_policy.WhichOneof("policy_choice") == "latest"
    assert config.version_policy.latest.num_versions == 1
    assert Settings.model_fields["model_versions"].get_default(call_default_factory=True) == {}
