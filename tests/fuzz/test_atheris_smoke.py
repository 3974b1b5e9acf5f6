"""Every atheris target (fuzz/) runs clean for a fixed number of coverage-guided inputs;
``make fuzz`` runs them for minutes instead."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fuzz.run import TARGET_NAMES
from fuzz.seeds import corpus
from fuzz.targets import TARGETS

REPO = Path(__file__).resolve().parents[2]
RUNS = {"message": 10_000, "sdp": 3_000, "jwt": 15_000, "vp8": 40_000, "vp8_frames": 15_000,
        "rtcp": 10_000, "candidate": 15_000, "send_loop": 10_000}
"""About two seconds of each target on a quiet core."""


def test_every_target_is_run_and_seeded() -> None:
    assert set(TARGETS) == set(TARGET_NAMES) == set(RUNS) == set(corpus())


@pytest.mark.parametrize("target", TARGET_NAMES)
def test_seed_inputs_pass_their_target(target: str) -> None:
    for data in corpus()[target]:
        TARGETS[target](data)


@pytest.mark.parametrize("target", TARGET_NAMES)
def test_target_runs_clean_under_atheris(target: str, tmp_path: Path) -> None:
    if not os.environ.get("PARLEY_CI"):
        pytest.importorskip("atheris")
    proc = subprocess.run(
        [sys.executable, "-m", "fuzz.run", target, f"--artifacts={tmp_path}",
         f"-runs={RUNS[target]}", "-seed=1"],
        cwd=REPO, capture_output=True, text=True, timeout=100, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    done = re.search(r"Done (\d+) runs", proc.stderr)
    assert done and int(done[1]) >= RUNS[target], proc.stderr[-2000:]
    assert not list((tmp_path / "crashes").iterdir())
