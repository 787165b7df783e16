"""Tests for kdsweep.losses against values computed independently of torch's losses."""

import math

import numpy as np
import pytest
import torch

from kdsweep.losses import (
    LossParams,
    base,
    dkd_loss,
    dkd_terms,
    dkd_warmup,
    get_loss,
    kd_loss,
    kd_terms,
    list_losses,
    needs_teacher,
    register_loss,
    soft_target_loss,
)

STUDENT = [[1.0, 2.0, 0.5], [0.2, -1.0, 3.0]]
TEACHER = [[2.0, 1.0, 0.0], [0.0, 0.5, 2.5]]
TARGETS = [1, 2]


def _t(rows, dtype=torch.float64, requires_grad=False):
    return torch.tensor(rows, dtype=dtype, requires_grad=requires_grad)


def _y(targets=TARGETS):
    return torch.tensor(targets, dtype=torch.long)


# --- plain-Python references (math.exp / math.log, loops) -------------------


def _py_probs(row, temperature=1.0):
    scaled = [x / temperature for x in row]
    m = max(scaled)
    exps = [math.exp(x - m) for x in scaled]
    return [e / sum(exps) for e in exps]


def _py_kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))


def _py_ce(student, targets):
    return sum(-math.log(_py_probs(row)[y]) for row, y in zip(student, targets, strict=True)) / len(student)


def _py_soft(student, teacher, temperature):
    kls = [_py_kl(_py_probs(t, temperature), _py_probs(s, temperature)) for s, t in zip(student, teacher, strict=True)]
    return temperature**2 * sum(kls) / len(kls)


# --- numpy reference for DKD, with explicit probabilities as in the paper ---


def _np_kl(p, q):
    return float(np.sum(p * np.log(p / q)))


def _np_dkd(student, teacher, targets, temperature, alpha, beta, warmup=1.0):
    s = np.asarray(student, dtype=np.float64)
    t = np.asarray(teacher, dtype=np.float64)

    def softmax(z):
        e = np.exp(z - z.max())
        return e / e.sum()

    ce = tckd = nckd = 0.0
    for s_row, t_row, y in zip(s, t, targets, strict=True):
        ce += -np.log(softmax(s_row)[y])
        p_s, p_t = softmax(s_row / temperature), softmax(t_row / temperature)
        b_s = np.array([p_s[y], 1.0 - p_s[y]])
        b_t = np.array([p_t[y], 1.0 - p_t[y]])
        tckd += _np_kl(b_t, b_s)
        others = [c for c in range(len(s_row)) if c != y]
        hat_s = p_s[others] / p_s[others].sum()
        hat_t = p_t[others] / p_t[others].sum()
        nckd += _np_kl(hat_t, hat_s)
    n = len(targets)
    kd = warmup * (alpha * tckd / n + beta * nckd / n) * temperature**2
    return ce / n + kd, ce / n, kd


# --- classic KD ---------------------------------------------------------------


def test_soft_target_loss_matches_closed_form_two_class_kl():
    # p_s = [1/4, 3/4], p_t = [3/4, 1/4] at T=2 -> KL = 3/4 ln3 - 1/4 ln3 = ln3 / 2; times T^2 = 4.
    ln3 = math.log(3.0)
    s, t = _t([[0.0, 2 * ln3]]), _t([[2 * ln3, 0.0]])
    assert soft_target_loss(s, t, 2.0).item() == pytest.approx(2 * ln3, rel=1e-12)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kd_loss_matches_hand_computation_two_samples_three_classes(temperature):
    alpha = 0.7
    expected_kd = _py_soft(STUDENT, TEACHER, temperature)
    expected_ce = _py_ce(STUDENT, TARGETS)
    terms = kd_terms(_t(STUDENT), _t(TEACHER), _y(), LossParams(temperature, alpha))
    assert terms.kd.item() == pytest.approx(expected_kd, rel=1e-10)
    assert terms.ce.item() == pytest.approx(expected_ce, rel=1e-10)
    expected_total = alpha * expected_kd + (1 - alpha) * expected_ce
    assert terms.total.item() == pytest.approx(expected_total, rel=1e-10)
    loss = kd_loss(_t(STUDENT), _t(TEACHER), _y(), temperature, alpha)
    assert loss.item() == pytest.approx(expected_total, rel=1e-10)


def test_kd_alpha_zero_is_hand_computed_ce_and_needs_no_teacher():
    expected = _py_ce(STUDENT, TARGETS)
    terms = kd_terms(_t(STUDENT), None, _y(), LossParams(temperature=4.0, alpha=0.0))
    assert terms.total.item() == pytest.approx(expected, rel=1e-12)
    assert terms.ce.item() == pytest.approx(expected, rel=1e-12)
    assert terms.kd.item() == 0.0
    with_teacher = kd_loss(_t(STUDENT), _t(TEACHER), _y(), 4.0, 0.0)
    assert with_teacher.item() == pytest.approx(expected, rel=1e-12)


def test_kd_alpha_one_is_t_squared_kl_only():
    expected = _py_soft(STUDENT, TEACHER, 3.0)
    loss = kd_loss(_t(STUDENT), _t(TEACHER), _y(), 3.0, 1.0)
    assert loss.item() == pytest.approx(expected, rel=1e-10)


def test_kd_identical_student_and_teacher_give_zero_kl():
    terms = kd_terms(_t(STUDENT), _t(STUDENT), _y(), LossParams(temperature=4.0, alpha=1.0))
    assert terms.kd.item() == pytest.approx(0.0, abs=1e-12)
    assert terms.total.item() == pytest.approx(0.0, abs=1e-12)


def test_kd_missing_teacher_with_positive_alpha_raises_clear_error():
    with pytest.raises(ValueError, match="needs teacher_logits"):
        kd_loss(_t(STUDENT), None, _y(), 4.0, 0.5)


def test_dkd_missing_teacher_raises_clear_error():
    with pytest.raises(ValueError, match="'dkd' needs teacher_logits"):
        dkd_terms(_t(STUDENT), None, _y(), LossParams(temperature=4.0, alpha=1.0))


# --- DKD ----------------------------------------------------------------------

DKD_STUDENT = [[1.0, 2.0, 0.5, -0.3], [0.2, -1.0, 3.0, 1.1], [-2.0, 0.4, 0.0, 0.9]]
DKD_TEACHER = [[2.0, 1.0, 0.0, 0.7], [0.0, 0.5, 2.5, -1.5], [0.3, -0.6, 1.8, 0.1]]
DKD_TARGETS = [1, 2, 0]


@pytest.mark.parametrize("temperature", [1.0, 4.0])
@pytest.mark.parametrize(
    ("alpha", "beta", "warmup"), [(1.0, 8.0, 1.0), (0.5, 2.0, 1.0), (2.0, 0.0, 0.3), (0.0, 1.0, 0.6)]
)
def test_dkd_matches_numpy_reference_of_paper_formulas(temperature, alpha, beta, warmup):
    exp_total, exp_ce, exp_kd = _np_dkd(DKD_STUDENT, DKD_TEACHER, DKD_TARGETS, temperature, alpha, beta, warmup)
    params = LossParams(temperature=temperature, alpha=alpha, beta=beta, warmup=warmup)
    terms = dkd_terms(_t(DKD_STUDENT), _t(DKD_TEACHER), _y(DKD_TARGETS), params)
    assert terms.ce.item() == pytest.approx(exp_ce, rel=1e-10)
    assert terms.kd.item() == pytest.approx(exp_kd, rel=1e-9, abs=1e-12)
    assert terms.total.item() == pytest.approx(exp_total, rel=1e-10)
    loss = dkd_loss(_t(DKD_STUDENT), _t(DKD_TEACHER), _y(DKD_TARGETS), temperature, alpha, beta, warmup)
    assert loss.item() == pytest.approx(exp_total, rel=1e-10)


def test_dkd_two_classes_has_zero_nckd_and_tckd_equals_full_kl():
    # With two classes the non-target distribution is a single point (NCKD = 0)
    # and the binary distribution is the full softmax, so TCKD is the plain KL.
    ln3 = math.log(3.0)
    s, t = _t([[0.0, ln3]]), _t([[ln3, 0.0]])
    only_nckd = dkd_terms(s, t, _y([1]), LossParams(temperature=1.0, alpha=0.0, beta=5.0))
    assert only_nckd.kd.item() == pytest.approx(0.0, abs=1e-12)
    only_tckd = dkd_terms(s, t, _y([1]), LossParams(temperature=1.0, alpha=1.0, beta=0.0))
    assert only_tckd.kd.item() == pytest.approx(ln3 / 2, rel=1e-12)


def test_dkd_identical_student_and_teacher_give_zero_kd_term():
    terms = dkd_terms(_t(DKD_STUDENT), _t(DKD_STUDENT), _y(DKD_TARGETS), LossParams(temperature=4.0, alpha=1.0))
    assert terms.kd.item() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    ("epoch", "warmup_epochs", "expected"),
    [
        (1, 20, 0.05),
        (10, 20, 0.5),
        (20, 20, 1.0),
        (35, 20, 1.0),
        (1, 1, 1.0),
        (3, 0, 1.0),
        (3, -5, 1.0),
    ],
)
def test_dkd_warmup_is_linear_then_capped_at_one(epoch, warmup_epochs, expected):
    assert dkd_warmup(epoch, warmup_epochs) == pytest.approx(expected, rel=1e-15)


# --- numerical robustness and gradients ----------------------------------------

EXTREME_STUDENT = [[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4], [0.0, 1e4, -1e4]]
EXTREME_TEACHER = [[-1e4, 1e4, 0.0], [1e4, -1e4, -1e4], [0.0, 1e4, -1e4]]
EXTREME_TARGETS = [0, 2, 1]


def _loss_and_grad(fn, student, teacher):
    s = _t(student, dtype=torch.float32, requires_grad=True)
    t = _t(teacher, dtype=torch.float32)
    loss = fn(s, t, _y(EXTREME_TARGETS))
    loss.backward()
    return loss, s.grad


@pytest.mark.parametrize("temperature", [1.0, 4.0])
@pytest.mark.parametrize(
    "fn",
    [
        pytest.param(lambda s, t, y, T: kd_loss(s, t, y, T, 0.5), id="kd"),
        pytest.param(lambda s, t, y, T: dkd_loss(s, t, y, T, 1.0, 8.0), id="dkd"),
    ],
)
@pytest.mark.parametrize("teacher", [EXTREME_TEACHER, EXTREME_STUDENT], ids=["disagree", "agree"])
def test_extreme_float32_logits_give_finite_loss_and_gradients(fn, temperature, teacher):
    loss, grad = _loss_and_grad(lambda s, t, y: fn(s, t, y, temperature), EXTREME_STUDENT, teacher)
    assert torch.isfinite(loss).item()
    assert torch.isfinite(grad).all().item()
    # Saturated softmax is ~one-hot, so each gradient entry stays within the bounded range of
    # (p_s - p_t)-type terms times the loss weights, not blown up.
    assert grad.abs().max().item() < 100.0


def test_extreme_logits_kd_value_matches_saturated_limit():
    # At T=1 the student puts all mass on class 0 and the teacher on class 1, so
    # KL(p_t || p_s) = log p_t[1] - log p_s[1] = 0 - (-2e4) = 2e4.
    s = _t([[1e4, -1e4, 0.0]], dtype=torch.float32)
    t = _t([[-1e4, 1e4, 0.0]], dtype=torch.float32)
    assert soft_target_loss(s, t, 1.0).item() == pytest.approx(2e4, rel=1e-6)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_kd_loss_gradcheck_wrt_student_logits(alpha):
    g = torch.Generator().manual_seed(0)
    s = torch.randn(2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 3, generator=g, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: kd_loss(x, t, _y(), 2.0, alpha), (s,))


@pytest.mark.parametrize(("temperature", "alpha", "beta"), [(1.0, 1.0, 8.0), (4.0, 0.5, 2.0)])
def test_dkd_loss_gradcheck_wrt_student_logits(temperature, alpha, beta):
    g = torch.Generator().manual_seed(1)
    s = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(3, 4, generator=g, dtype=torch.float64)
    y = _y(DKD_TARGETS)
    assert torch.autograd.gradcheck(lambda x: dkd_loss(x, t, y, temperature, alpha, beta, warmup=0.7), (s,))


# --- registry -------------------------------------------------------------------


def test_get_loss_returns_registered_kd_and_dkd_functions():
    assert get_loss("kd") is kd_terms
    assert get_loss("dkd") is dkd_terms


def test_list_losses_is_sorted_names():
    assert list_losses() == ["dist", "dkd", "kd"]


def test_unknown_loss_message_lists_choices_and_suggests_close_name():
    with pytest.raises(ValueError, match="unknown loss 'kdd'") as excinfo:
        get_loss("kdd")
    message = str(excinfo.value)
    assert message == "unknown loss 'kdd'; did you mean 'kd'? (choose from: dist, dkd, kd)"


def test_unknown_loss_far_from_any_name_has_no_suggestion():
    with pytest.raises(ValueError, match="unknown loss 'contrastive'") as excinfo:
        get_loss("contrastive")
    assert "did you mean" not in str(excinfo.value)


def test_register_loss_makes_function_selectable_by_name(monkeypatch):
    monkeypatch.setattr(base, "_LOSSES", base._LOSSES.copy())

    @register_loss("zero")
    def zero_terms(student_logits, teacher_logits, targets, params):
        raise NotImplementedError

    assert get_loss("zero") is zero_terms
    assert list_losses() == ["dist", "dkd", "kd", "zero"]


@pytest.mark.parametrize(
    ("name", "alpha", "expected"),
    [
        ("kd", 0.0, False),
        ("kd", 0.5, True),
        ("kd", 1.0, True),
        ("dkd", 0.0, True),
        ("dkd", 1.0, True),
    ],
)
def test_needs_teacher_false_only_for_kd_with_alpha_zero(name, alpha, expected):
    assert needs_teacher(name, LossParams(temperature=4.0, alpha=alpha)) is expected
