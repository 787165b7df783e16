"""DIST (Huang et al. 2022) against a plain-Python re-computation of the official code, and in a trial."""

from __future__ import annotations

import math

import loss_references as ref
import pytest
import torch
from test_distill import TINY, tiny_model
from test_teacher_cache import Float16

from kdsweep.losses import LossParams, dist_terms, dkd_terms, get_loss, kd_terms, list_losses, needs_teacher
from kdsweep.teachers import OnlineTeacher, build_teacher_cache
from kdsweep.trial import TrialConfig, run_trial

STUDENT = [[1.0, 2.0, 0.5, -0.3], [0.2, -1.0, 3.0, 1.1], [-2.0, 0.4, 0.0, 0.9]]
TEACHER = [[2.0, 1.0, 0.0, 0.7], [0.0, 0.5, 2.5, -1.5], [0.3, -0.6, 1.8, 0.1]]
TARGETS = [1, 2, 0]


def _t(rows, dtype=torch.float64, requires_grad=False):
    return torch.tensor(rows, dtype=dtype, requires_grad=requires_grad)


def _y(targets=TARGETS):
    return torch.tensor(targets, dtype=torch.long)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
@pytest.mark.parametrize(("alpha", "beta"), [(1.0, 1.0), (2.0, 0.5), (0.0, 1.0), (1.0, 0.0)])
def test_dist_matches_a_plain_python_recomputation_of_the_official_code(temperature, alpha, beta):
    total, ce, soft = ref.dist(STUDENT, TEACHER, TARGETS, temperature, alpha, beta)
    terms = dist_terms(_t(STUDENT), _t(TEACHER), _y(), LossParams(temperature, alpha, beta))
    assert terms.ce.item() == pytest.approx(ce, rel=1e-12)
    assert terms.kd.item() == pytest.approx(soft, rel=1e-10, abs=1e-14)
    assert terms.total.item() == pytest.approx(total, rel=1e-10)


def test_two_classes_predicted_the_opposite_way_are_perfectly_anti_correlated():
    # Centred two-class probabilities are (d, -d): student and teacher leaning opposite ways have
    # correlation -1 per sample, so inter = 2 whatever the confidence; per class across this batch of
    # two mirrored samples the columns are also opposite, so intra = 2 too.
    s = _t([[2.0, 0.0], [0.0, 2.0]])
    t = _t([[0.0, 0.5], [0.5, 0.0]])
    only_inter = dist_terms(s, t, _y([0, 1]), LossParams(temperature=2.0, alpha=1.0, beta=0.0))
    only_intra = dist_terms(s, t, _y([0, 1]), LossParams(temperature=2.0, alpha=0.0, beta=1.0))
    assert only_inter.kd.item() == pytest.approx(2.0 * 2.0**2, rel=1e-6)
    assert only_intra.kd.item() == pytest.approx(2.0 * 2.0**2, rel=1e-6)


def test_identical_student_and_teacher_give_a_soft_term_of_zero_but_for_the_cosines_eps():
    # At T=4 the centred probabilities are small (norm^2 ~ 1e-3), so the official 1e-8 leaves ~1e-5 * T^2.
    terms = dist_terms(_t(STUDENT), _t(STUDENT), _y(), LossParams(temperature=4.0, alpha=1.0, beta=1.0))
    _, _, soft = ref.dist(STUDENT, STUDENT, TARGETS, 4.0, 1.0, 1.0)
    assert terms.kd.item() == pytest.approx(soft, rel=1e-8)
    assert 0.0 < terms.kd.item() < 1e-4


def test_a_batch_of_one_has_intra_class_distance_one():
    # One sample: every class's column is a single value, centred to 0, so its correlation is 0.
    s, t = STUDENT[:1], TEACHER[:1]
    inter = ref.pearson_distance([ref.softmax(s[0], 2.0)], [ref.softmax(t[0], 2.0)])
    terms = dist_terms(_t(s), _t(t), _y(TARGETS[:1]), LossParams(temperature=2.0, alpha=0.5, beta=3.0))
    assert terms.kd.item() == pytest.approx((0.5 * inter + 3.0 * 1.0) * 4.0, rel=1e-10)


def test_ce_is_weighted_as_in_dkd_added_at_weight_one_while_kd_trades_it_for_alpha():
    params = LossParams(temperature=4.0, alpha=0.7, beta=2.0)
    ce = ref.cross_entropy(STUDENT, TARGETS)
    for fn in (dist_terms, dkd_terms):
        terms = fn(_t(STUDENT), _t(TEACHER), _y(), params)
        assert terms.ce.item() == pytest.approx(ce, rel=1e-12)
        assert (terms.total - terms.kd).item() == pytest.approx(ce, rel=1e-12), fn.__name__
    kd = kd_terms(_t(STUDENT), _t(TEACHER), _y(), params)
    assert (kd.total - 0.7 * kd.kd).item() == pytest.approx(0.3 * ce, rel=1e-12)
    no_soft = LossParams(temperature=4.0, alpha=0.0, beta=0.0)
    assert dist_terms(_t(STUDENT), _t(TEACHER), _y(), no_soft).total.item() == pytest.approx(ce, rel=1e-12)


EXTREME_STUDENT = [[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4], [0.0, 1e4, -1e4]]
EXTREME_TEACHER = [[-1e4, 1e4, 0.0], [1e4, -1e4, -1e4], [0.0, 1e4, -1e4]]
EQUAL = [[3.0, 3.0, 3.0]] * 3


@pytest.mark.parametrize("temperature", [1.0, 4.0])
@pytest.mark.parametrize(
    ("student", "teacher"),
    [(EXTREME_STUDENT, EXTREME_TEACHER), (EXTREME_STUDENT, EQUAL), (EQUAL, EXTREME_TEACHER)],
    ids=["extreme", "equal-teacher", "equal-student"],
)
def test_extreme_and_all_equal_float32_logits_give_the_reference_value_and_finite_gradients(
    student, teacher, temperature
):
    s = _t(student, dtype=torch.float32, requires_grad=True)
    terms = dist_terms(s, _t(teacher, dtype=torch.float32), _y([0, 2, 1]), LossParams(temperature, 1.0, 2.0))
    terms.total.backward()
    _, _, soft = ref.dist(student, teacher, [0, 2, 1], temperature, 1.0, 2.0)
    assert terms.kd.item() == pytest.approx(soft, rel=1e-5, abs=1e-5)
    assert torch.isfinite(terms.total).item()
    assert torch.isfinite(s.grad).all().item()


def test_all_equal_logits_on_both_sides_give_distance_one_for_both_relations():
    # Uniform probabilities centre to 0: correlation 0 (not NaN), distance 1, for rows and columns.
    s = _t(EQUAL, dtype=torch.float32, requires_grad=True)
    terms = dist_terms(s, _t(EQUAL, dtype=torch.float32), _y([0, 2, 1]), LossParams(4.0, 1.0, 2.0))
    terms.kd.backward()
    assert terms.kd.item() == pytest.approx((1.0 + 2.0) * 16.0, rel=1e-6)
    assert torch.equal(s.grad, torch.zeros_like(s))


@pytest.mark.parametrize(("temperature", "alpha", "beta"), [(1.0, 1.0, 1.0), (4.0, 2.0, 0.5)])
def test_dist_gradcheck_wrt_student_logits(temperature, alpha, beta):
    g = torch.Generator().manual_seed(2)
    s = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(3, 4, generator=g, dtype=torch.float64)
    params = LossParams(temperature, alpha, beta)
    assert torch.autograd.gradcheck(lambda x: dist_terms(x, t, _y(), params).total, (s,))


def test_dist_is_registered_and_always_needs_a_teacher():
    assert list_losses() == ["dist", "dkd", "kd"]
    assert get_loss("dist") is dist_terms
    assert needs_teacher("dist", LossParams(temperature=4.0, alpha=0.0))
    with pytest.raises(ValueError, match="'dist' needs teacher_logits"):
        dist_terms(_t(STUDENT), None, _y(), LossParams(temperature=4.0, alpha=1.0))


def test_a_dist_trial_reports_finite_losses_with_ce_added_at_weight_one(tiny_data):
    config = TrialConfig(**TINY, loss="dist", temperature=4.0, alpha=1.0, beta=1.0)
    result = run_trial(config, tiny_data, logit_source=OnlineTeacher(tiny_model(tiny_data)))
    assert [m["epoch"] for m in result.history] == [1, 2]
    for metrics in result.history:
        assert all(math.isfinite(metrics[k]) for k in ("train_loss", "train_ce", "train_kd", "val_loss"))
        assert metrics["train_loss"] == pytest.approx(metrics["train_ce"] + metrics["train_kd"], rel=1e-6)
        # Each Pearson distance lies in [0, 2]: the soft term in [0, (alpha + beta) * 2 * T^2] = [0, 64].
        assert 0.0 < metrics["train_kd"] < 64.0


def test_dist_trains_the_same_student_on_the_cache_as_on_the_online_teacher(tiny_data):
    # The intra-class term correlates columns across the batch: it is only right if the teacher's
    # rows are those of the student's batch, in its order. Both teachers answer for the trial's own
    # batches (the cache by sample index), so the runs agree to float rounding.
    teacher = tiny_model(tiny_data)
    cache = build_teacher_cache(teacher, tiny_data, 2, torch.device("cpu"), 64.0, log=lambda _: None)
    config = TrialConfig(**TINY, loss="dist", alpha=1.0, beta=1.0)
    cached = run_trial(config, tiny_data, logit_source=cache)
    online = run_trial(config, tiny_data, logit_source=OnlineTeacher(Float16(teacher), view_epochs=cache.view_epochs))
    for a, b in zip(cached.history, online.history, strict=True):
        assert a["train_kd"] == pytest.approx(b["train_kd"], rel=1e-5)
    for a, b in zip(cached.student.state_dict().values(), online.student.state_dict().values(), strict=True):
        torch.testing.assert_close(a.float(), b.float(), atol=1e-5, rtol=1e-5)
