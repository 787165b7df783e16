"""benchmarks/gpu_check.py: its table and exit logic by hand, and its CPU dry run end to end (what keeps a
check that needs a GPU from rotting on machines without one)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import gpu_check  # noqa: E402
from gpu_check import SCENARIOS, Result, cache_build_seconds, exit_code, max_concurrent, table  # noqa: E402


def test_max_concurrent_counts_the_spans_open_at_one_moment():
    assert max_concurrent([]) == 0
    assert max_concurrent([(0, 10), (1, 9), (2, 8), (3, 7)]) == 4
    assert max_concurrent([(0, 5), (5, 10)]) == 1  # one ends as the next starts
    assert max_concurrent([(0, 4), (1, 2), (3, 6), (5, 7)]) == 2


def test_cache_build_seconds_is_the_teacher_stages_last_line():
    log = "x\n(_train_and_cache pid=1) teacher cache: built in 1.7 s\nteacher: cached on node n (GPU)\n"
    assert cache_build_seconds(log) == 1.7
    assert cache_build_seconds("teacher cache: the data streams from disk, ... running the teacher online") is None


def test_one_failed_or_missing_scenario_fails_the_check():
    ok = [Result(name) for name in SCENARIOS]
    assert exit_code(ok) == 0
    assert exit_code([*ok[:2], Result("folder", problem="exit 1, expected 0"), ok[3]]) == 1
    assert exit_code(ok[:3]) == 1  # `resume` never ran
    assert exit_code(ok[:1], ("cached",)) == 0  # --only cached


def test_the_table_has_one_row_per_scenario_with_its_figures():
    rows = table(
        [
            Result("cached", at_once_per_gpu=4, per_trial=900.0, solo=1000.0, gpu_util=87.4, peak_mib=4096,
                   cache_build_s=1.25, wall_s=61.2),
            Result("online", problem="exit 1, expected 0", wall_s=30),
        ]
    ).splitlines()  # fmt: skip
    assert len(rows) == 4
    assert rows[2] == "| cached | ok | 4 | 900 vs 1,000 (90%) | 87 % | 4,096 MiB | 1.2 s | 61 s |"
    assert rows[3] == "| online | FAILED: exit 1, expected 0 | n/a | n/a vs n/a | n/a % | n/a MiB | n/a s | 30 s |"


def test_the_dry_run_fits_the_cpus_it_declares():
    """4 trials at once on the worker: its CPUs, not only the declared GPU, must hold them."""
    size = gpu_check.DRY_RUN
    assert size.worker_cpus >= gpu_check.TRIALS * size.cpus_per_trial
    assert size.loader_workers <= size.cpus_per_trial


@pytest.mark.slow
@pytest.mark.multinode
def test_the_cpu_dry_run_runs_every_scenario_on_a_cpu_head_and_a_worker_with_a_declared_gpu():
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--cpu-dry-run"],
        capture_output=True,
        text=True,
        timeout=2700,  # 19.5 min measured with 4 helpers sharing 2 cores (load ~12)
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-6000:]
    rows = {}
    for line in out.stdout.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if line.startswith("| ") and cells[0] in SCENARIOS:
            rows[cells[0]] = cells
    assert list(rows) == list(SCENARIOS), out.stdout
    assert all(cells[1] == "ok" for cells in rows.values()), out.stdout
    # 0.25 GPU per trial: up to 4 at once on the one (declared) GPU, never more.
    for name in ("cached", "online", "folder", "resume"):
        assert 1 <= int(rows[name][2]) <= 4, rows[name]
    for name in ("cached", "online", "folder"):
        assert re.fullmatch(r"[\d,]+ vs [\d,]+ \(\d+%\)", rows[name][3]), rows[name]
        assert rows[name][4:6] == ["n/a %", "n/a MiB"], rows[name]  # no nvidia-smi figures without CUDA
    assert re.fullmatch(r"\d+\.\d s", rows["cached"][6]), rows["cached"]  # the teacher's logit cache was built
    assert rows["online"][6] == rows["folder"][6] == "n/a s"  # an online teacher: no cache
