"""Logit standardization (Sun et al. 2024): the z-score itself, every loss's soft term on it, the searched switch."""

from __future__ import annotations

import math

import loss_references as ref
import pytest
import torch

from kdsweep import losses
from kdsweep.config import load_config
from kdsweep.distill import build, build_parser
from kdsweep.errors import ConfigError
from kdsweep.losses import LossParams, dist_terms, dkd_terms, kd_terms, standardize
from kdsweep.space import trial_template, tune_param_space
from kdsweep.teachers import OnlineTeacher
from kdsweep.trial import TrialConfig, run_trial

STUDENT = [[1.0, 2.0, 0.5, -0.3], [0.2, -1.0, 3.0, 1.1], [-2.0, 0.4, 0.0, 0.9]]
TEACHER = [[2.0, 1.0, 0.0, 0.7], [0.0, 0.5, 2.5, -1.5], [0.3, -0.6, 1.8, 0.1]]
TARGETS = [1, 2, 0]
LOSSES = {"kd": kd_terms, "dkd": dkd_terms, "dist": dist_terms}


def _t(rows, dtype=torch.float64, requires_grad=False):
    return torch.tensor(rows, dtype=dtype, requires_grad=requires_grad)


def _y(targets=TARGETS):
    return torch.tensor(targets, dtype=torch.long)


def test_standardize_uses_the_unbiased_std_plus_1e_7_as_the_papers_code():
    # [1, 2, 3]: mean 2, unbiased std 1; [0, 2]: unbiased std sqrt(2) (the biased one would be 1).
    assert standardize(_t([[1.0, 2.0, 3.0]])).tolist()[0] == pytest.approx([-1 / (1 + 1e-7), 0.0, 1 / (1 + 1e-7)])
    root2 = math.sqrt(2.0)
    assert standardize(_t([[0.0, 2.0]])).tolist()[0] == pytest.approx([-1 / (root2 + 1e-7), 1 / (root2 + 1e-7)])
    assert standardize(_t(STUDENT)).tolist() == [pytest.approx(row, rel=1e-12) for row in ref.standardize(STUDENT)]


@pytest.mark.parametrize("rows", [[[5.0, 5.0, 5.0]], [[1e4, -1e4, 0.0]]], ids=["equal", "extreme"])
def test_standardize_is_finite_with_finite_gradients_on_equal_and_extreme_float32_logits(rows):
    z = _t(rows, dtype=torch.float32, requires_grad=True)
    out = standardize(z)
    (out * torch.arange(1.0, 4.0)).sum().backward()
    assert out.tolist()[0] == pytest.approx(ref.standardize(rows)[0], abs=1e-6)
    assert torch.isfinite(z.grad).all().item()


@pytest.mark.parametrize("name", LOSSES)
def test_the_soft_term_takes_standardized_logits_and_ce_the_raw_ones(name):
    fn = LOSSES[name]
    on = fn(_t(STUDENT), _t(TEACHER), _y(), LossParams(4.0, 0.7, 2.0, standardize=True))
    assert on.ce.item() == pytest.approx(ref.cross_entropy(STUDENT, TARGETS), rel=1e-12)
    s, t = ref.standardize(STUDENT), ref.standardize(TEACHER)
    expected = {
        "kd": lambda: ref.kd_soft(s, t, 4.0),
        "dist": lambda: ref.dist(s, t, TARGETS, 4.0, 0.7, 2.0)[2],
        # dkd itself is checked against its numpy reference in test_losses.py: here, that it gets z-scores.
        "dkd": lambda: dkd_terms(_t(s), _t(t), _y(), LossParams(4.0, 0.7, 2.0)).kd.item(),
    }[name]()
    assert on.kd.item() == pytest.approx(expected, rel=1e-6)
    off = fn(_t(STUDENT), _t(TEACHER), _y(), LossParams(4.0, 0.7, 2.0))
    assert abs(off.kd.item() - on.kd.item()) > 1e-3 * abs(off.kd.item())  # the switch does something


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("side", ["student", "teacher"])
@pytest.mark.parametrize(("scale", "shift"), [(3.7, 5.0), (0.2, -11.0)])
def test_standardized_soft_terms_ignore_a_positive_scale_and_a_shift_of_either_side(name, side, scale, shift):
    fn = LOSSES[name]
    params = LossParams(4.0, 0.7, 2.0, standardize=True)
    s, t = _t(STUDENT), _t(TEACHER)
    moved = (s * scale + shift, t) if side == "student" else (s, t * scale + shift)
    before = fn(s, t, _y(), params).kd.item()
    after = fn(*moved, _y(), params).kd.item()
    assert after == pytest.approx(before, rel=1e-6)
    raw = LossParams(4.0, 0.7, 2.0)
    assert fn(*moved, _y(), raw).kd.item() != pytest.approx(fn(s, t, _y(), raw).kd.item(), rel=1e-3)


EXTREME = [[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4], [0.0, 1e4, -1e4]]
EQUAL = [[3.0, 3.0, 3.0]] * 3


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize(
    ("student", "teacher"),
    [(EXTREME, EXTREME[::-1]), (EQUAL, EXTREME), (EXTREME, EQUAL)],
    ids=["extreme", "eq-s", "eq-t"],
)
def test_standardized_losses_on_extreme_and_equal_float32_logits_are_finite_and_as_referenced(name, student, teacher):
    s = _t(student, dtype=torch.float32, requires_grad=True)
    terms = LOSSES[name](
        s, _t(teacher, dtype=torch.float32), _y([0, 2, 1]), LossParams(4.0, 0.7, 2.0, standardize=True)
    )
    terms.total.backward()
    assert torch.isfinite(terms.total).item()
    assert torch.isfinite(s.grad).all().item()
    zs, zt = ref.standardize(student), ref.standardize(teacher)
    if name == "kd":
        assert terms.kd.item() == pytest.approx(ref.kd_soft(zs, zt, 4.0), rel=1e-5)
    elif name == "dist":
        assert terms.kd.item() == pytest.approx(ref.dist(zs, zt, [0, 2, 1], 4.0, 0.7, 2.0)[2], rel=1e-5)


def _space(tmp_path, search: str):
    path = tmp_path / "space.yaml"
    path.write_text(f"search:\n{search}")
    return load_config(path)


def test_a_searched_standardize_choice_validates_and_reaches_the_trials_loss_params(tmp_path):
    config = _space(tmp_path, "  loss: {choice: [kd, dkd, dist]}\n  standardize: {choice: [false, true]}\n")
    assert tune_param_space(config)["standardize"].categories == [False, True]
    template = trial_template(config)
    trial = template.trial({"loss": "dist", "standardize": True})
    assert trial.loss_params == LossParams(4.0, 0.9, 8.0, standardize=True)
    assert template.trial({"loss": "kd", "standardize": False}).loss_params.standardize is False


def test_a_standardize_value_that_is_no_boolean_is_refused_before_anything_runs(tmp_path):
    with pytest.raises(ConfigError) as error:
        _space(tmp_path, "  standardize: {choice: [false, maybe]}\n")
    assert error.value.field == "search.standardize"


def test_the_trial_loop_passes_standardize_to_the_loss_every_epoch(tiny_data, monkeypatch):
    monkeypatch.setattr(losses.base, "_LOSSES", losses.base._LOSSES.copy())
    seen: list[LossParams] = []

    @losses.register_loss("recorded")
    def recorded(student_logits, teacher_logits, targets, params):
        seen.append(params)
        return dist_terms(student_logits, teacher_logits, targets, params)

    torch.manual_seed(1)
    teacher = OnlineTeacher(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4)))
    config = TrialConfig(
        student="small_cnn",
        width=4,
        epochs=2,
        batch_size=64,
        measure_latency=False,
        loss="recorded",
        standardize=True,
        alpha=1.0,
        beta=1.0,
        dkd_warmup_epochs=2,
    )
    result = run_trial(config, tiny_data, logit_source=teacher)
    assert math.isfinite(result.metrics["train_loss"])
    batches = len(seen) // 2
    assert {p.standardize for p in seen} == {True}
    assert [p.warmup for p in seen] == [0.5] * batches + [1.0] * batches


def test_the_distill_command_sets_standardize_with_a_flag():
    parser = build_parser()
    assert build(parser.parse_args(["--loss", "dist", "--standardize"]))[1].loss_params.standardize is True
    assert build(parser.parse_args(["--loss", "dist"]))[1].loss_params.standardize is False
