"""MLflow's web UI tells the story of a sweep: a real ASHA sweep, a real `mlflow server`, Debian's Chromium.

Checks what a user sees when they open the link kdsweep printed: the training view (not MLflow 3's
GenAI overview), every trial, the champion's model, early-stopped trials drawn as finished, and the
parent run's summary. The screenshots go to test-artifacts/mlflow-ui/ (CI keeps that folder).
Chromium and Playwright are required: .ci/run installs both, so a missing one fails here, loudly.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from playwright.sync_api import expect, sync_playwright

from kdsweep import search
from kdsweep.tracking.ui import experiment_url, run_url, ui_base

CHROMIUM = "/usr/bin/chromium"  # Debian's (`apt-get install chromium`); never a downloaded browser
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "mlflow-ui"
TIMEOUT_MS = 60_000  # a first page load runs MLflow's large JavaScript bundle on two busy cores

# ASHA on a grid whose order makes an early stop certain: two learning trials fill both slots; the
# third (lr 1e-5 barely moves its weights) starts when one of them has ended, so it reaches the
# rung at epoch 1 after at least one of them, below it, and is stopped. Trials are seeded and
# deterministic on the CPU, so their epoch-1 accuracies are the same on every run.
UI_SPACE = {
    "data": {"name": "synthetic", "channels": 1, "image_size": 8, "num_classes": 4, "num_samples": 480},
    "teacher": {"arch": "small_cnn", "epochs": 2},
    "budget": {"epochs": 2, "num_samples": 1},
    "confirm": {"top": 0},
    "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2},
    "searcher": {"name": "random", "max_concurrent": 2, "seed": 1},
    "resources": {"cpus_per_trial": 1, "max_failures": 0},
    "fixed": {"student": "small_cnn", "width": 8, "batch_size": 16, "alpha": 0.5},
    "search": {"lr": {"grid": [0.1, 0.05, 0.00001]}},
}

# The status icon MLflow draws in a run's "Created" cell: the first path of its SVG.
FINISHED_ICON = "M11.53 6.53"  # green check-circle
FAILED_ICON = "M6.94 8 4.97"  # red x-circle: FAILED and KILLED alike
# What a browser remembers between visits: MLflow's assistant panel stays closed, so it covers nothing.
QUIET_ASSISTANT = {"mlflow.assistant.panelOpen_v1": "false", "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true"}
# The runs table's columns as a user would add them with "Columns" (kept by the UI in localStorage).
STORY_COLUMNS = [
    "attributes.`Dataset`",
    "attributes.`Models`",
    "metrics.`val_accuracy`",
    "metrics.`best_val_accuracy`",
    "metrics.`best_epoch`",
    "tags.`kdsweep.outcome`",
    "params.`lr`",
]


@pytest.fixture(scope="module")
def sweep(ray_session, mlflow_server, tmp_path_factory):
    """The sweep, run into the tests' `mlflow server` (a sqlite store), and every line it printed."""
    root = tmp_path_factory.mktemp("ui")
    space = root / "ui.yaml"
    space.write_text(yaml.safe_dump(UI_SPACE))
    argv = ["--space", str(space), "--name", "ui", "--storage", str(root / "results"), "--tracking-uri", mlflow_server]
    argv.append("--no-baselines")  # the scratch baselines' place in MLflow is test_sweep's
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = search.main([*argv, "--output-json", str(root / "rows.json")])
    assert code == 0, printed.getvalue()
    return mlflow_server, printed.getvalue().splitlines(), json.loads((root / "rows.json").read_text())


@pytest.fixture(scope="module")
def browser():
    assert Path(CHROMIUM).exists(), f"no {CHROMIUM}: apt-get install -y chromium (.ci/run does)"
    shutil.rmtree(SHOTS, ignore_errors=True)  # only this run's screenshots
    SHOTS.mkdir(parents=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def new_page(browser, remembered: dict[str, str]):
    """A fresh browser profile that remembers only `remembered` (localStorage), 1800 px wide."""
    context = browser.new_context(viewport={"width": 1800, "height": 900})
    seed = "".join(f"localStorage.setItem({json.dumps(k)}, {json.dumps(v)});" for k, v in remembered.items())
    context.add_init_script(seed)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    return page


def printed_link(lines: list[str], prefix: str) -> str:
    """The link on the line kdsweep printed that starts with `prefix`."""
    links = [re.search(r"http://\S+", line) for line in lines if line.startswith(prefix)]
    [link] = [link.group(0) for link in links if link]
    return link


def row(page, run_id: str):
    """A run's row of the runs table (AG Grid splits it in pinned and scrolling parts, one row-id)."""
    return page.locator(f'[role="row"][row-id="{run_id}"]')


def cell(page, run_id: str, column: str):
    return row(page, run_id).locator(f'[role="gridcell"][col-id="{column}"]')


def status_icon(page, run_id: str) -> str:
    return cell(page, run_id, "runDateAndNestInfo").locator("svg path").first.get_attribute("d")


@pytest.mark.slow  # a sweep and a real browser
def test_the_printed_link_opens_the_training_view_with_every_trial_and_the_champion_model(sweep, browser):
    url, lines, rows = sweep
    link = printed_link(lines, "the sweep in MLflow's UI:")
    assert "?workflowType=machine_learning" in link
    assert "/runs?" in link
    champion = next(r for r in rows if r.get("champion"))
    experiment = MlflowClient(url).get_experiment_by_name("ui")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # what MLflow 3.17 does not read
    page = new_page(browser, QUIET_ASSISTANT)  # a browser that has never chosen a view
    page.goto(link)
    expect(page.locator('h2:text-is("Runs")')).to_be_visible()  # the training view; GenAI's is "Overview"
    for trial in rows:  # sorted by the objective: every trial is a row of its own, not folded under the parent
        expect(row(page, trial["mlflow_run_id"]).first).to_be_visible()
    # The champion's Models cell links to its model (shown by its registered name and version).
    model = cell(page, champion["mlflow_run_id"], "attributes.`Models`").get_by_role("link")
    expect(model).to_be_visible()
    assert "/models/" in model.get_attribute("href")
    page.screenshot(path=str(SHOTS / "01-runs-as-linked.png"))
    page.context.close()


@pytest.mark.slow  # a sweep and a real browser
def test_early_stopped_trials_are_drawn_as_finished_not_failed(sweep, browser):
    url, lines, rows = sweep
    stopped = [r for r in rows if r["status"] == "STOPPED"]
    assert stopped, "the grid is ordered so that ASHA stops the lr=1e-5 trial at epoch 1"
    experiment_id = MlflowClient(url).get_run(stopped[0]["mlflow_run_id"]).info.experiment_id
    state = {"selectedColumns": STORY_COLUMNS}
    columns = {f'MLflowLocalStorage-1.1-ExperimentPage-["{experiment_id}"]-ReactComponentState': json.dumps(state)}
    page = new_page(browser, {**QUIET_ASSISTANT, **columns})
    page.goto(printed_link(lines, "the sweep in MLflow's UI:"))
    for trial in rows:
        run_id = trial["mlflow_run_id"]
        expect(cell(page, run_id, "tags.`kdsweep.outcome`")).to_have_text(trial["status"])
        assert status_icon(page, run_id).startswith(FINISHED_ICON), trial["status"]
        assert not status_icon(page, run_id).startswith(FAILED_ICON)
    expect(cell(page, stopped[0]["mlflow_run_id"], "metrics.`best_epoch`")).to_have_text("1")
    page.screenshot(path=str(SHOTS / "02-runs-with-outcome-and-best-columns.png"))
    # The stopped trial's own page says Finished, and its tags say why it ended.
    page.goto("about:blank")  # a real page load: the app reads the link's query when it starts
    page.goto(run_url(url, experiment_id, stopped[0]["mlflow_run_id"]))
    expect(page.get_by_test_id("key-value-Status").get_by_role("status")).to_have_text("Finished")
    expect(page.get_by_text("kdsweep.outcome", exact=False).first).to_be_visible()
    page.screenshot(path=str(SHOTS / "03-stopped-trial-run-page.png"))
    page.context.close()


@pytest.mark.slow  # a sweep and a real browser
def test_the_parent_run_shows_the_sweep_summary(sweep, browser):
    url, lines, rows = sweep
    client = MlflowClient(url)
    parent_id = client.get_run(rows[0]["mlflow_run_id"]).data.tags["mlflow.parentRunId"]
    parent = client.get_run(parent_id)
    assert parent.data.metrics["trials"] == len(rows)
    assert parent.data.metrics["trials_stopped"] == sum(r["status"] == "STOPPED" for r in rows)
    champion = next(r for r in rows if r.get("champion"))
    assert parent.data.metrics["champion_val_accuracy"] == pytest.approx(champion["metrics"]["val_accuracy"])
    champion_link = run_url(url, parent.info.experiment_id, champion["mlflow_run_id"])
    assert printed_link(lines, "champion:") == champion_link  # the line kdsweep printed, this same helper
    page = new_page(browser, QUIET_ASSISTANT)
    page.goto(run_url(url, parent.info.experiment_id, parent_id))
    expect(page.get_by_test_id("key-value-Status").get_by_role("status")).to_have_text("Finished")
    page.get_by_text("Show more", exact=True).click()  # the description is folded after a few lines
    table = page.get_by_role("table").filter(has_text="val_acc").first
    expect(table).to_be_visible()
    for trial in rows:
        name = client.get_run(trial["mlflow_run_id"]).info.run_name
        expect(table.get_by_role("cell", name=name, exact=True)).to_be_visible()
    page.screenshot(path=str(SHOTS / "04-parent-run-summary.png"))
    page.context.close()


# ---------------------------------------------------------------- the links, without a browser


def test_links_open_the_training_view_sorted_best_first():
    base = "http://127.0.0.1:5000"
    assert experiment_url(base, "7", "latency_ms", "min") == (
        f"{base}/#/experiments/7/runs?workflowType=machine_learning&orderByKey=metrics.%60latency_ms%60&orderByAsc=true"
    )
    assert run_url(base, "7", "abc") == f"{base}/#/experiments/7/runs/abc?workflowType=machine_learning"


def test_a_local_store_is_linked_through_mlflow_ui_and_a_server_through_itself(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert ui_base(f"sqlite:///{tmp_path / 'mlflow.db'}") == ("http://127.0.0.1:5000", "mlflow ui")
    other = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    assert ui_base(other) == ("http://127.0.0.1:5000", f"mlflow ui --backend-store-uri {other}")
    assert ui_base("https://user:secret@mlflow.example.com/") == ("https://mlflow.example.com", None)
