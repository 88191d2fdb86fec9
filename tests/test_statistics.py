"""The experiment report's statistics (sql/functions/estimation.sql) against independent
computations: Python's math.erfc / math.lgamma, exact fractions for Fisher's test, the formulas
written out again here, and the published values of Newcombe (1998)."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

Z = 1.959963984540054


def wilson(x: int, n: int, z: float = Z) -> tuple[float, float]:
    p = x / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def newcombe(x1: int, n1: int, x2: int, n2: int) -> tuple[float, float, float]:
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson(x1, n1)
    l2, u2 = wilson(x2, n2)
    d = p1 - p2
    return d, d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


def z_test_p(x1: int, n1: int, x2: int, n2: int) -> float:
    pooled = (x1 + x2) / (n1 + n2)
    if pooled in (0, 1):
        return 1.0
    z = (x1 / n1 - x2 / n2) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    return math.erfc(abs(z) / math.sqrt(2))


def fisher_p(x1: int, n1: int, x2: int, n2: int) -> float:
    k, n = x1 + x2, n1 + n2
    total = math.comb(n, k)
    probs = {a: Fraction(math.comb(n1, a) * math.comb(n2, k - a), total)
             for a in range(max(0, k - n2), min(k, n1) + 1)}
    observed = probs[x1]
    return float(sum(p for p in probs.values() if p <= observed * (1 + Fraction(1, 10**7))))


@pytest.mark.parametrize("x", [-6.0, -2.5, -1.0, -1e-9, 0.0, 0.3, 1.0, 1.959963984540054, 1.999, 2.0, 2.5, 4.0, 8.0, 12.0, 26.5])
def test_erfc_matches_the_math_library(conn, x) -> None:
    got = conn.execute("SELECT precall.erfc(%s)", (x,)).fetchone()[0]
    assert got == pytest.approx(math.erfc(x), rel=1e-13, abs=1e-300)


@pytest.mark.parametrize("x", [0.5, 1, 2, 3.5, 10, 14.9, 15, 100, 2501, 1e6])
def test_ln_gamma_matches_the_math_library(conn, x) -> None:
    got = conn.execute("SELECT precall.ln_gamma(%s)", (x,)).fetchone()[0]
    assert got == pytest.approx(math.lgamma(x), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("x,n,published", [
    # Newcombe (1998), Stat Med 17:857, Table II, method 3 (score, no continuity correction).
    (81, 263, (0.2553, 0.3662)), (15, 148, (0.0624, 0.1605)), (0, 20, (0.0, 0.1611)), (1, 29, (0.0061, 0.1718)),
])
def test_wilson_interval(conn, x, n, published) -> None:
    lo, hi = conn.execute("SELECT lo, hi FROM precall.wilson_interval(%s, %s)", (x, n)).fetchone()
    assert (lo, hi) == pytest.approx(wilson(x, n), abs=1e-9)
    assert (round(lo, 4), round(hi, 4)) == published


@pytest.mark.parametrize("a,published", [
    # Newcombe (1998), Stat Med 17:873, Table II, method 10 (hybrid score, no continuity correction).
    ((56, 70, 48, 80), (0.0524, 0.3339)), ((9, 10, 3, 10), (0.1705, 0.8090)),
    ((6, 7, 2, 7), (0.0582, 0.8062)), ((5, 56, 0, 29), (-0.0381, 0.1926)),
])
def test_newcombe_hybrid_score_interval(conn, a, published) -> None:
    diff, lo, hi = conn.execute("SELECT diff, lo, hi FROM precall.newcombe_interval(%s, %s, %s, %s)", a).fetchone()
    assert (diff, lo, hi) == pytest.approx(newcombe(*a), abs=1e-9)
    assert (round(lo, 4), round(hi, 4)) == published


@pytest.mark.parametrize("a", [(56, 70, 48, 80), (9, 10, 3, 10), (140, 200, 120, 200), (700, 1000, 650, 1000),
                               (0, 50, 0, 60), (50, 50, 60, 60), (3, 300, 12, 310)])
def test_two_proportion_z_test(conn, a) -> None:
    got = conn.execute("SELECT precall.two_proportion_p(%s, %s, %s, %s)", a).fetchone()[0]
    assert got == pytest.approx(z_test_p(*a), abs=1e-9)


@pytest.mark.parametrize("a", [(3, 4, 1, 4), (1, 10, 7, 12), (0, 20, 5, 20), (2, 300, 9, 310), (10, 10, 0, 10),
                               (5, 56, 0, 29), (45, 60, 30, 62), (0, 5, 0, 5)])
def test_fisher_exact_two_sided(conn, a) -> None:
    got = conn.execute("SELECT precall.fisher_exact_p(%s, %s, %s, %s)", a).fetchone()[0]
    assert got == pytest.approx(fisher_p(*a), abs=1e-9)


def test_fisher_known_value(conn) -> None:
    # Fisher's lady tasting tea: 3 of 4 cups right each way; two-sided p = 34/70.
    assert conn.execute("SELECT precall.fisher_exact_p(3, 4, 1, 4)").fetchone()[0] == pytest.approx(34 / 70, abs=1e-12)


def test_empty_arms_give_nulls_not_errors(conn) -> None:
    assert conn.execute("SELECT lo, hi FROM precall.wilson_interval(0, 0)").fetchone() == (None, None)
    assert conn.execute("SELECT precall.two_proportion_p(0, 0, 1, 2)").fetchone() == (None,)
    assert conn.execute("SELECT diff FROM precall.newcombe_interval(1, 2, 0, 0)").fetchone() == (None,)
