"""Readers for the deployment files under test: compose files, Dockerfile instructions and nginx's body limit."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from harness.server import REPO_ROOT

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
GPU_OVERRIDE_FILE = REPO_ROOT / "docker-compose.gpu.yml"
DOCKERFILE = REPO_ROOT / "Dockerfile.gpu"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
NGINX_CONF = REPO_ROOT / "deploy" / "nginx" / "nginx.conf"
UPSTREAM_CONF = REPO_ROOT / "deploy" / "nginx" / "upstream.conf"

_NGINX_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024 * 1024}


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction with its continuation lines joined; ``stage`` counts FROMs, from 0."""

    keyword: str
    arguments: str
    stage: int


def load_yaml(path: Path) -> dict[str, Any]:
    # YAML 1.2 with merge keys, as Compose reads it.
    document: dict[str, Any] = YAML(typ="safe", pure=True).load(path)
    return document


def deployed_app_environment() -> dict[str, str]:
    """The app's ``environment`` in docker-compose.yml: the settings the replicas run with."""
    environment: dict[str, str] = load_yaml(COMPOSE_FILE)["services"]["app"]["environment"]
    return environment


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[Instruction]:
    instructions: list[Instruction] = []
    stage = -1
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        # Docker drops comment lines, also between the continuation lines of one instruction.
        if not stripped or stripped.startswith("#"):
            continue
        pending = f"{pending} {stripped}" if pending else stripped
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        keyword, _, arguments = pending.partition(" ")
        if keyword.upper() == "FROM":
            stage += 1
        instructions.append(Instruction(keyword.upper(), arguments.strip(), stage))
        pending = ""
    return instructions


def exec_form(arguments: str) -> list[str]:
    """The JSON array of an exec-form instruction such as ``CMD ["a", "b"]``, after any ``--flags``."""
    array: list[str] = json.loads(arguments[arguments.index("[") :])
    return array


def nginx_size_bytes(size: str) -> int:
    """An nginx size such as ``10m`` (also ingress-nginx's ``proxy-body-size``) in bytes."""
    match = re.fullmatch(r"(\d+)([km]?)", size)
    if match is None:
        raise ValueError(f"not an nginx size: {size!r}")
    return int(match.group(1)) * _NGINX_SIZE_UNITS[match.group(2)]


def nginx_body_limit_bytes() -> int:
    match = re.search(r"^\s*client_max_body_size\s+(\S+);", NGINX_CONF.read_text(), re.MULTILINE)
    if match is None:
        raise ValueError(f"no client_max_body_size in {NGINX_CONF}")
    return nginx_size_bytes(match.group(1))


def nginx_rate_limit() -> tuple[int, int]:
    """Requests per second and burst of the per-client limit in nginx.conf."""
    text = NGINX_CONF.read_text()
    rate = re.search(r"limit_req_zone .* rate=(\d+)r/s;", text)
    burst = re.search(r"limit_req zone=\S+ burst=(\d+)", text)
    if rate is None or burst is None:
        raise ValueError(f"no per-client rate limit in {NGINX_CONF}")
    return int(rate.group(1)), int(burst.group(1))


def image_env(path: Path = DOCKERFILE) -> dict[str, str]:
    """The ``ENV`` settings of the final stage (``KEY=value`` form, whitespace-free values)."""
    instructions = dockerfile_instructions(path)
    final_stage = instructions[-1].stage
    settings = (
        pair.partition("=")
        for instruction in instructions
        if instruction.keyword == "ENV" and instruction.stage == final_stage
        for pair in instruction.arguments.split()
    )
    return {key: value for key, _, value in settings}
