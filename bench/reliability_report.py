"""The reliability figures the README's "Guarantees" cite: runs the reliability tests that measure (overload,
shutdown drain, slow uploads, an animated GIF, schema fuzzing, a rollout across replicas) and collects what each
records into ``reports/reliability.json``.

Run with ``python -m bench.reliability_report``. The tests write their figures only when ``RELIABILITY_FIGURES_DIR``
names a folder (this script sets it); in a plain test run they measure and assert the same, and write nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

logger = logging.getLogger("bench")

REPO_ROOT = Path(__file__).resolve().parent.parent
OUTPUT = REPO_ROOT / "reports" / "reliability.json"
FIGURES_DIR_VARIABLE = "RELIABILITY_FIGURES_DIR"
_TESTS = "tests/reliability/"
# Each measuring test and the name its figures are recorded under.
MEASURING_TESTS = {
    "overload": _TESTS + "test_overload.py::test_overload_is_refused_with_503_and_bounded_latency",
    "shutdown": _TESTS + "test_shutdown.py::test_sigterm_drains_by_readiness_then_answers_every_accepted_request",
    "slow_uploads": _TESTS + "test_slow_uploads.py",
    "animated_gif": _TESTS + "test_bad_uploads.py::test_predict_gif_with_hundreds_of_frames_reads_the_first_one",
    "schema_fuzz": _TESTS + "test_schema_fuzz.py",
    "rollout": _TESTS + "test_rollout.py",
}


def collect_figures(figures_dir: Path) -> dict[str, Any]:
    """Every measuring test's figures from ``figures_dir``; an error names the tests that recorded none."""
    figures = {path.stem: json.loads(path.read_text()) for path in sorted(figures_dir.glob("*.json"))}
    missing = sorted(set(MEASURING_TESTS) - set(figures))
    if missing:
        raise RuntimeError(f"no figures recorded by: {', '.join(missing)}")
    return figures


def _commit() -> str:
    result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    return result.stdout.strip()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory() as figures_dir:
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *MEASURING_TESTS.values()]
        env = {**os.environ, FIGURES_DIR_VARIABLE: figures_dir}
        if subprocess.run(command, cwd=REPO_ROOT, env=env, check=False).returncode != 0:
            raise SystemExit("a measuring test failed: no report written")
        figures = collect_figures(Path(figures_dir))
    report = {
        "commit": _commit(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "system": platform.system()},
        "figures": figures,
    }
    args.output.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    logger.info("wrote %s", args.output)


if __name__ == "__main__":
    main()
