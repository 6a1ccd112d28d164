"""The fuzz targets of fuzz/, each run for a few seconds (coverage-guided, atheris).

Each target asserts its invariant (only ParseError escapes; round trips hold)
and stops with a crash file on the first input that breaks it, so a failure
here prints the input. Longer runs: see README "Fuzzing and soak".
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris")

ROOT = Path(__file__).resolve().parents[1]
FUZZ = ROOT / "fuzz"
TARGETS = ("parser", "uri", "headers", "digest")
SECONDS = 5  # per target: four targets stay well under a minute


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src")
    return env


@pytest.mark.parametrize("target", TARGETS)
def test_seed_corpus_replays_clean(target: str) -> None:
    seeds = sorted((FUZZ / "corpus" / target).iterdir())
    assert seeds, f"no seed corpus for {target}"
    proc = subprocess.run(
        [sys.executable, str(FUZZ / f"fuzz_{target}.py"), *map(str, seeds)],
        capture_output=True, text=True, timeout=120, env={**_env(), "FUZZ_REPLAY": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]


@pytest.mark.parametrize("target", TARGETS)
def test_bounded_fuzz_run_finds_nothing(target: str, tmp_path: Path) -> None:
    work = tmp_path / "corpus"
    work.mkdir()
    proc = subprocess.run(
        [sys.executable, str(FUZZ / f"fuzz_{target}.py"), str(work),
         str(FUZZ / "corpus" / target), f"-max_total_time={SECONDS}", "-runs=200000",
         f"-artifact_prefix={tmp_path}/", "-print_final_stats=1"],
        capture_output=True, text=True, timeout=SECONDS + 60, env=_env())
    crashes = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-", "leak-")))
    found = proc.stderr.partition("=== Uncaught Python exception: ===")[2][:4000]
    assert proc.returncode == 0 and not crashes, (crashes, found or proc.stderr[-4000:])
    assert "Done" in proc.stderr, proc.stderr[-2000:]
