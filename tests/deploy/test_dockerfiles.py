"""The image definition: hadolint-clean, non-root, runtime dependencies only, and a health check that works.

No Docker engine is needed: the instructions are read from the file, and the parts that run inside the
container (the dependency list and the health probe) are run here for real.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from harness.server import REPO_ROOT, free_port
from tests.support.deploy import DOCKERFILE, DOCKERIGNORE, dockerfile_instructions, exec_form, image_env
from tests.support.replicas import Replicas

HADOLINT = Path(sys.executable).parent / "hadolint"
PROBE_TIMEOUT_S = 15.0

# Paths of a working tree and whether the build context must contain them.
CONTEXT_EXPECTATIONS = {
    "pyproject.toml": True,
    "README.md": True,
    "service/main.py": True,
    "service/static/index.html": True,
    "contract/store.py": True,
    "imaging/digit.py": True,
    "training/export.py": True,
    "model_store/cnn/config.pbtxt": True,
    "model_store/cnn/1/model.pt": True,
    "service/__pycache__/main.cpython-311.pyc": False,
    "model_store/cnn/.tmp-0a1b2c/model.pt": False,
    "model_store/cnn/.publish.lock": False,
    ".venv/bin/python": False,
    ".git/HEAD": False,
    "tests/conftest.py": False,
    "deploy/nginx/nginx.conf": False,
    "data/mnist/train-images-idx3-ubyte.gz": False,
}


def _dockerignore_regex(pattern: str) -> re.Pattern[str]:
    """Docker's pattern syntax: ``**`` spans folders, ``*`` and ``?`` stay within one, ``[...]`` is a class."""
    parts: list[str] = []
    index = 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            parts.append("(?:.*/)?")
            index += 3
        elif pattern.startswith("**", index):
            parts.append(".*")
            index += 2
        elif pattern[index] == "[":
            end = pattern.index("]", index)
            parts.append(pattern[index : end + 1])
            index = end + 1
        else:
            parts.append({"*": "[^/]*", "?": "[^/]"}.get(pattern[index], re.escape(pattern[index])))
            index += 1
    return re.compile("".join(parts))


def _in_build_context(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders decides."""
    candidates = [str(Path(*Path(path).parts[:end])) for end in range(1, len(Path(path).parts) + 1)]
    included = True
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        regex = _dockerignore_regex(line.lstrip("!").strip("/"))
        if any(regex.fullmatch(candidate) for candidate in candidates):
            included = negated
    return included


@pytest.fixture
def not_ready_server() -> Iterator[int]:
    """A server whose readiness answers 503, as the service's does while it loads models or drains."""

    class NotReady(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), NotReady)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    thread.join()
    server.server_close()


def _run_image_health_probe(port: int) -> int:
    probe = next(i for i in dockerfile_instructions() if i.keyword == "HEALTHCHECK")
    argv = exec_form(probe.arguments)
    # The image's python is a virtual environment of the same interpreter as this one.
    argv[0] = shutil.which(argv[0], path=str(Path(sys.executable).parent)) or sys.executable
    result = subprocess.run(
        argv, env={"DIGITS_PORT": str(port)}, capture_output=True, timeout=PROBE_TIMEOUT_S, check=False
    )
    return result.returncode


def test_dockerfile_passes_hadolint(tmp_path: Path) -> None:
    # An explicit empty configuration: a user's global hadolint.yaml must not silence rules here.
    config = tmp_path / "hadolint.yaml"
    config.write_text("ignored: []\n")

    result = subprocess.run(
        [str(HADOLINT), "--config", str(config), "--failure-threshold", "style", "--format", "json", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )

    assert json.loads(result.stdout) == []
    assert result.returncode == 0, result.stderr


def test_every_hadolint_pragma_carries_a_reason() -> None:
    lines = DOCKERFILE.read_text().splitlines()

    unexplained = [
        number + 1
        for number, line in enumerate(lines)
        if "hadolint ignore=" in line and (number == 0 or not re.match(r"#\s*\w", lines[number - 1].strip()))
    ]

    assert unexplained == []


def test_the_only_dockerfile_serves_both_variants() -> None:
    # The CPU variant is a build argument of the same file, not a second file to keep in step.
    assert sorted(path.name for path in REPO_ROOT.glob("Dockerfile*")) == [DOCKERFILE.name]

    build_stage = [i for i in dockerfile_instructions() if i.stage == 0]

    assert any(i.keyword == "ARG" and i.arguments == "TORCH_VARIANT=cu130" for i in build_stage)
    assert any(
        i.keyword == "RUN" and '--extra-index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}"' in i.arguments
        for i in build_stage
    )


def test_image_runs_as_a_numeric_non_root_user() -> None:
    instructions = dockerfile_instructions()
    final_stage = instructions[-1].stage

    users = [i.arguments for i in instructions if i.keyword == "USER" and i.stage == final_stage]

    # Numeric, so orchestrators can verify "non-root" without reading /etc/passwd.
    assert len(users) == 1
    uid, _, gid = users[0].partition(":")
    assert int(uid) > 0
    assert int(gid) > 0


def test_image_serves_the_service_on_port_8000_and_stops_on_sigterm() -> None:
    all_instructions = dockerfile_instructions()
    instructions = {i.keyword: i.arguments for i in all_instructions if i.stage == all_instructions[-1].stage}
    env = image_env()

    assert exec_form(instructions["CMD"]) == ["digits-serve"]
    assert instructions["EXPOSE"] == "8000"
    assert instructions["STOPSIGNAL"] == "SIGTERM"
    assert (env["DIGITS_HOST"], env["DIGITS_PORT"]) == ("0.0.0.0", "8000")


def test_image_installs_the_runtime_dependencies_only(tmp_path: Path) -> None:
    pip_runs = [i.arguments for i in dockerfile_instructions() if i.keyword == "RUN" and "pip install" in i.arguments]
    words = shlex.split(pip_runs[0])
    extract_requirements = words[words.index("-c") + 1]
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path)

    # The command that writes requirements.txt in the image, run on the real pyproject.toml.
    result = subprocess.run(
        [sys.executable, "-c", extract_requirements], cwd=tmp_path, capture_output=True, text=True, check=True
    )

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert result.stdout.splitlines() == project["dependencies"]
    assert "pip install --no-deps ." in pip_runs[1]
    assert not any("[dev]" in run for run in pip_runs)


@pytest.mark.parametrize(("path", "expected"), sorted(CONTEXT_EXPECTATIONS.items()))
def test_build_context_holds_what_the_image_needs_and_nothing_else(path: str, expected: bool) -> None:
    assert _in_build_context(path) is expected


def test_every_copied_path_is_in_the_build_context() -> None:
    copies = [
        i.arguments.split() for i in dockerfile_instructions() if i.keyword == "COPY" and "--from" not in i.arguments
    ]
    sources = [source for words in copies for source in words[:-1]]

    assert sources
    assert [source for source in sources if not _in_build_context(source.rstrip("/"))] == []


@pytest.mark.slow
def test_image_health_probe_passes_only_while_the_service_is_ready(replicas: Replicas, not_ready_server: int) -> None:
    assert _run_image_health_probe(replicas.servers[0].port) == 0
    assert _run_image_health_probe(not_ready_server) != 0
    assert _run_image_health_probe(free_port()) != 0
