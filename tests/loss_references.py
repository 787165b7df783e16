"""Plain-Python references for the newer losses, written from the papers' formulas with explicit loops.

Nothing here calls torch: a test compares kdsweep's tensors with these numbers.
"""

from __future__ import annotations

import math

Rows = list[list[float]]


def softmax(row: list[float], temperature: float = 1.0) -> list[float]:
    scaled = [x / temperature for x in row]
    top = max(scaled)
    exps = [math.exp(x - top) for x in scaled]
    total = sum(exps)
    return [e / total for e in exps]


def cross_entropy(logits: Rows, targets: list[int]) -> float:
    return sum(-math.log(softmax(row)[y]) for row, y in zip(logits, targets, strict=True)) / len(logits)


def standardize(rows: Rows) -> Rows:
    """Sun et al.'s code: (z - mean) / (1e-7 + std), std unbiased (divided by C - 1)."""
    out = []
    for row in rows:
        mean = sum(row) / len(row)
        std = math.sqrt(sum((x - mean) ** 2 for x in row) / (len(row) - 1))
        out.append([(x - mean) / (1e-7 + std) for x in row])
    return out


def kd_soft(student: Rows, teacher: Rows, temperature: float) -> float:
    """T^2 * mean over samples of KL(p_t || p_s)."""
    total = 0.0
    for s, t in zip(student, teacher, strict=True):
        p_s, p_t = softmax(s, temperature), softmax(t, temperature)
        total += sum(pt * math.log(pt / ps) for ps, pt in zip(p_s, p_t, strict=True) if pt > 0)
    return temperature**2 * total / len(student)


def pearson_distance(a: Rows, b: Rows) -> float:
    """DIST's 1 - mean over rows of cos(a - mean(a), b - mean(b)), eps 1e-8 after the product of norms."""
    correlations = []
    for row_a, row_b in zip(a, b, strict=True):
        mean_a, mean_b = sum(row_a) / len(row_a), sum(row_b) / len(row_b)
        ca = [x - mean_a for x in row_a]
        cb = [x - mean_b for x in row_b]
        dot = sum(x * y for x, y in zip(ca, cb, strict=True))
        norms = math.sqrt(sum(x * x for x in ca)) * math.sqrt(sum(y * y for y in cb))
        correlations.append(dot / (norms + 1e-8))
    return 1 - sum(correlations) / len(correlations)


def transpose(rows: Rows) -> Rows:
    return [[row[c] for row in rows] for c in range(len(rows[0]))]


def dist(
    student: Rows, teacher: Rows, targets: list[int], temperature: float, alpha: float, beta: float
) -> tuple[float, float, float]:
    """(total, ce, soft) of DIST with our weights: CE + (alpha * inter + beta * intra) * T^2."""
    p_s = [softmax(row, temperature) for row in student]
    p_t = [softmax(row, temperature) for row in teacher]
    inter = pearson_distance(p_s, p_t)
    intra = pearson_distance(transpose(p_s), transpose(p_t))
    soft = (alpha * inter + beta * intra) * temperature**2
    ce = cross_entropy(student, targets)
    return ce + soft, ce, soft
