"""kdsweep as a cluster node installs it: a wheel (not an editable checkout), used from another directory."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run(command: list, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=600, **kwargs)
    assert done.returncode == 0, f"{command}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.mark.slow
def test_a_wheel_in_a_fresh_venv_runs_the_default_sweep_from_another_directory_and_knows_every_shipped_space(tmp_path):
    source, wheels, venv, elsewhere = (tmp_path / d for d in ("source", "wheels", "venv", "elsewhere"))
    # Built from a copy, so that the build's own folders (build/, *.egg-info) stay out of the checkout.
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "kdsweep", source / "kdsweep", ignore=shutil.ignore_patterns("__pycache__"))
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", wheels, source])
    (wheel,) = wheels.glob("kdsweep-*.whl")
    run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "-q", wheel])
    installed = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    # The wheel's kdsweep first, then this environment's third-party packages; never the checkout.
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "RAY_ADDRESS", "MLFLOW_TRACKING_URI", "KDSWEEP_STORAGE")
    }
    env["PYTHONPATH"] = os.pathsep.join([installed, *site.getsitepackages()])
    elsewhere.mkdir()

    where = run([python, "-c", "import kdsweep; print(kdsweep.__file__)"], cwd=elsewhere, env=env).stdout
    assert Path(where.strip()).is_relative_to(venv), where
    tiny = [
        "teacher.arch=small_cnn",
        "teacher.epochs=1",
        "budget.epochs=1",
        "budget.num_samples=1",
        "confirm.top=0",
        "scheduler.name=none",
    ]
    # No --space: the shipped default, as `python -m kdsweep.search` on a cluster's head runs it.
    run(
        [
            python,
            "-m",
            "kdsweep.search",
            *(a for t in tiny for a in ("--set", t)),
            "--set",
            "fixed.batch_size=256",
            "--no-select",
            "--no-baselines",
            "--output-json",
            "rows.json",
        ],
        cwd=elsewhere,
        env=env,
    )
    (row,) = [r for r in json.loads((elsewhere / "rows.json").read_text()) if r["role"] == "trial"]
    assert row["status"] == "FINISHED"
    assert (elsewhere / "kdsweep_results" / "default").is_dir()
    # Every shipped space by name (but imagefolder, which needs a folder of images).
    names = "from kdsweep.config import *; [load_config(n) for n in shipped_spaces() if n != 'imagefolder']"
    run([python, "-c", names], cwd=elsewhere, env=env)
