"""The GPU step benchmark's smoke mode (issue 26): it runs on the CPU and prints one complete JSON line per
configuration. Timings are not asserted here (benchmarks report ratios; tests never time)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO


def test_gpu_step_benchmark_smoke_prints_one_json_line_per_configuration():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "benchmarks/gpu_step.py", "--smoke", "--spaces", "nb201"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [(r["space"], r["order"]) for r in lines] == [("nb201", 1), ("nb201", 2)]
    for r in lines:
        assert r["s_per_step"] > 0 and r["samples_per_s"] > 0 and r["steps_per_epoch"] == 391
        assert r["extrapolated_50_epochs_min"] == pytest.approx(r["s_per_step"] * 391 * 50 / 60, rel=1e-3, abs=0.01)
        assert (r["precision"], r["compile"], r["device"]) == ("32-true", "eager", "cpu")
    assert lines[0]["ratio_to_plain"] > 0 and "ratio_to_plain" not in lines[1]
