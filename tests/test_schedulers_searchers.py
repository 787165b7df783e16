"""The scheduler and searcher registries: names, the did-you-mean line, and config checks that read what an
entry declares rather than its name. The bad-input lines of a whole sweep are in test_sweep.py."""

from __future__ import annotations

import pytest
from test_sweep import TINY_SPACE, write_space

from kdsweep import schedulers, searchers
from kdsweep.config import load_config
from kdsweep.errors import ConfigError
from kdsweep.schedulers import list_schedulers, register_scheduler, scheduler_entry
from kdsweep.searchers import list_searchers, register_searcher, searcher_entry


def test_the_registries_list_their_names_and_what_each_supports():
    assert list_schedulers() == ["asha", "hyperband", "none"]
    assert list_searchers() == ["optuna", "random"]
    assert list_searchers(multi_objective=True) == ["optuna"]
    assert list_searchers(grid=True) == ["random"]
    assert [name for name in list_schedulers() if scheduler_entry(name).stops_early] == ["asha", "hyperband"]
    assert not scheduler_entry("hyperband").grace_period
    assert scheduler_entry("hyperband").synchronous
    assert searcher_entry("optuna").adaptive
    assert not searcher_entry("random").adaptive


@pytest.mark.parametrize(
    ("lookup", "name", "line"),
    [
        (scheduler_entry, "hyperbnd", "unknown scheduler 'hyperbnd'; did you mean 'hyperband'? (choose from: asha, "),
        (searcher_entry, "Optuna", "unknown searcher 'Optuna'; did you mean 'optuna'? (choose from: optuna, random)"),
        (scheduler_entry, "pbt", "unknown scheduler 'pbt' (choose from: asha, hyperband, none)"),
    ],
)
def test_an_unknown_name_says_what_exists_and_what_was_meant(lookup, name, line):
    with pytest.raises(ValueError, match="unknown") as error:
        lookup(name)
    assert line in str(error.value)


def space(tmp_path, **sections):
    return write_space(tmp_path, {**TINY_SPACE, **sections})


def test_a_scheduler_without_a_grace_period_may_be_given_one_longer_than_the_budget(tmp_path):
    config = load_config(
        space(tmp_path, scheduler={"name": "hyperband", "grace_period": 5}, searcher={"name": "random", "seed": 1})
    )
    assert config.scheduler.name == "hyperband"
    assert config.budget.epochs == 2


def test_a_new_scheduler_is_one_entry_and_the_checks_read_what_it_declares(tmp_path, monkeypatch):
    monkeypatch.setattr(schedulers, "_SCHEDULERS", schedulers._SCHEDULERS.copy())
    register_scheduler("median", stops_early=True, grace_period=True)(lambda settings: None)
    assert "median" in list_schedulers()
    assert load_config(space(tmp_path, scheduler={"name": "median", "grace_period": 2})).scheduler.name == "median"
    with pytest.raises(ConfigError, match=r"scheduler.grace_period: 3 exceeds budget.epochs"):
        load_config(space(tmp_path, scheduler={"name": "median", "grace_period": 3}))


def test_a_new_searcher_is_one_entry_and_the_checks_read_what_it_declares(tmp_path, monkeypatch):
    monkeypatch.setattr(searchers, "_SEARCHERS", searchers._SEARCHERS.copy())
    register_searcher("nsga", adaptive=True, multi_objective=True)(lambda settings: None)
    several = [{"metric": "val_accuracy"}, {"metric": "latency_ms", "mode": "min"}]
    measured = {**TINY_SPACE["fixed"], "measure_latency": True}  # latency_ms is reported
    config = load_config(space(tmp_path, searcher={"name": "nsga"}, objective=several, fixed=measured))
    assert len(config.objectives) == 2
    with pytest.raises(ConfigError, match=r"objective: several objectives need .* \(searcher.name: nsga, optuna\)"):
        load_config(space(tmp_path, objective=several))  # random
    with pytest.raises(ConfigError, match=r"searcher.name: nsga cannot search a 'grid' domain"):
        load_config(space(tmp_path, searcher={"name": "nsga"}, search={"temperature": {"grid": [2.0, 4.0]}}))
