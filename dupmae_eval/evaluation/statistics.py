"""Paired significance tests over per-query scores, corrections for multiple comparisons, and the
bootstrap confidence interval of a mean difference.

Every computation is a library's: Student's paired t and the Wilcoxon signed-rank test are scipy's
(`ttest_rel`, `wilcoxon`), Fisher's randomization test is scipy's `permutation_test` (paired: each query's
two scores swapped at random, i.e. the sign of its difference flipped), the bootstrap is scipy's
`bootstrap`, and Holm, Bonferroni and Benjamini-Hochberg are statsmodels' `multipletests`. This module
fixes their settings (stated below) and checks its arguments before any work.

Choices, stated once:

* Two-sided everywhere. A query pair is (condition, baseline); Δ = condition − baseline.
* Two score lists that are equal query for query (or fewer than two queries) get p = 1: there is no
  evidence of a difference, and scipy's tests are undefined there (a zero variance, no non-zero rank).
* Randomization: the statistic is the mean difference; `permutations` (at least 10,000) random sign
  flips from a seeded generator. The p-value is (b + 1) / (N + 1), b the flips at least as extreme as the
  observed one, counted on each side and doubled (scipy's two-sided rule; the sign-flip distribution is
  symmetric, so this is the share of |mean| at least the observed |mean|). The +1 counts the observed
  assignment, one of the flips, so the p-value is never 0 and the test keeps its level exactly (Phipson &
  Smyth 2010). Queries with equal scores are left out first (flipping a zero difference changes no sum, so
  the p-value is the same test's); when 2^n ≤ `permutations` for the n left, every sign flip is enumerated
  instead: the exact p-value b / 2^n.
* Wilcoxon: queries with equal scores are dropped (scipy's `zero_method="wilcox"`, as R's `wilcox.test`),
  no continuity correction, scipy's `method="auto"` (exact distribution for up to 50 queries without
  ties, the normal approximation otherwise).
* Bootstrap: percentile interval of the mean Δ over queries resampled with replacement, 10,000 resamples,
  seeded.
* A Δ counts as a query won when > 0, lost when < 0, tied when exactly 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Hashable, Mapping, Optional, Sequence, Tuple, TypeVar

import numpy as np

from dupmae_eval.errors import DupMAEEvalError

TESTS = ("t", "randomization", "wilcoxon")
TEST_NAMES = {"t": "paired t-test", "randomization": "Fisher's randomization test (paired, sign flips)",
              "wilcoxon": "Wilcoxon signed-rank test"}
CORRECTIONS = ("holm", "bonferroni", "bh", "none")
CORRECTION_NAMES = {"holm": "Holm-Bonferroni", "bonferroni": "Bonferroni", "bh": "Benjamini-Hochberg",
                    "none": "no correction"}
_STATSMODELS_METHOD = {"holm": "holm", "bonferroni": "bonferroni", "bh": "fdr_bh"}

DEFAULT_ALPHA = 0.05
MIN_PERMUTATIONS = 10_000
DEFAULT_PERMUTATIONS = 10_000
DEFAULT_RESAMPLES = 10_000
DEFAULT_SEED = 0

K = TypeVar("K", bound=Hashable)


# --------------------------------------------------------------------------- argument checks


def check_test(name: str) -> str:
    if name not in TESTS:
        raise DupMAEEvalError(f"--test {name!r}: choose one of {', '.join(TESTS)}")
    return name


def check_correction(name: str) -> str:
    if name not in CORRECTIONS:
        raise DupMAEEvalError(f"--correction {name!r}: choose one of {', '.join(CORRECTIONS)}")
    return name


def check_alpha(alpha: float) -> float:
    try:
        value = float(alpha)
    except (TypeError, ValueError):
        raise DupMAEEvalError(f"--alpha {alpha!r}: not a number") from None
    if not 0.0 < value < 1.0:       # also refuses nan
        raise DupMAEEvalError(f"--alpha {alpha!r}: must lie strictly between 0 and 1")
    return value


def check_permutations(permutations: int) -> int:
    if isinstance(permutations, bool) or not isinstance(permutations, (int, np.integer)) \
            or permutations < MIN_PERMUTATIONS:
        raise DupMAEEvalError(f"permutations {permutations!r}: at least {MIN_PERMUTATIONS:,} are drawn")
    return int(permutations)


# --------------------------------------------------------------------------- tests


def _pair(a: Sequence[float], b: Sequence[float]) -> Tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"paired scores need two equally long lists, got shapes {x.shape} and {y.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("paired scores must be finite numbers")
    return x, y


def _no_difference(x: np.ndarray, y: np.ndarray) -> bool:
    return len(x) < 2 or bool(np.all(x == y))


def paired_t(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided Student's paired t-test (scipy.stats.ttest_rel)."""
    from scipy.stats import ttest_rel

    x, y = _pair(a, b)
    if _no_difference(x, y):
        return 1.0
    p = float(ttest_rel(x, y).pvalue)
    return 1.0 if math.isnan(p) else p       # a constant non-zero difference: t is infinite, scipy says nan


def wilcoxon(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank test (scipy.stats.wilcoxon; equal pairs dropped, no continuity
    correction, exact or normal approximation as scipy's method="auto" decides)."""
    from scipy.stats import wilcoxon as scipy_wilcoxon

    x, y = _pair(a, b)
    if _no_difference(x, y):
        return 1.0
    return float(scipy_wilcoxon(x, y, zero_method="wilcox", correction=False, alternative="two-sided",
                                method="auto").pvalue)


def _mean_difference(x, y, axis=-1):
    return np.mean(x - y, axis=axis)


def randomization(a: Sequence[float], b: Sequence[float], permutations: int = DEFAULT_PERMUTATIONS,
                  seed: int = DEFAULT_SEED) -> float:
    """Two-sided Fisher's randomization test of the mean difference (scipy.stats.permutation_test with
    paired samples) over the queries whose scores differ: (b + 1) / (N + 1) over N seeded random sign flips,
    exact when 2^n <= N for those n queries."""
    from scipy.stats import permutation_test

    permutations = check_permutations(permutations)
    x, y = _pair(a, b)
    if _no_difference(x, y):
        return 1.0
    differing = x != y              # a zero difference is the same under either sign: it moves no flip's sum
    x, y = x[differing], y[differing]
    if len(x) == 1:
        return 1.0                  # its two flips are equally extreme
    batch = max(1, min(permutations, 4_000_000 // len(x)))      # bounds memory: ~32 MB of floats at a time
    result = permutation_test((x, y), _mean_difference, permutation_type="samples", vectorized=True,
                              n_resamples=permutations, batch=batch, alternative="two-sided",
                              rng=np.random.default_rng(seed))
    return float(result.pvalue)


def paired_p(a: Sequence[float], b: Sequence[float], test: str = "t", *,
             permutations: int = DEFAULT_PERMUTATIONS, seed: int = DEFAULT_SEED) -> float:
    """The two-sided p-value of `test` ('t', 'randomization' or 'wilcoxon') for paired scores a vs b."""
    check_test(test)
    if test == "t":
        return paired_t(a, b)
    if test == "wilcoxon":
        return wilcoxon(a, b)
    return randomization(a, b, permutations=permutations, seed=seed)


# --------------------------------------------------------------------------- corrections


def correct(p_values: Mapping[K, float], method: str = "holm") -> Dict[K, float]:
    """Adjusted p-values for one family of comparisons (statsmodels' multipletests): 'holm',
    'bonferroni', 'bh' (Benjamini-Hochberg) or 'none' (returned as they are)."""
    from statsmodels.stats.multitest import multipletests

    check_correction(method)
    keys = list(p_values)
    raw = np.array([p_values[key] for key in keys], dtype=float)
    if method == "none" or not keys:
        return {key: float(p) for key, p in zip(keys, raw)}
    if np.isnan(raw).any() or (raw < 0).any() or (raw > 1).any():
        raise ValueError("p-values to correct must lie in [0, 1]")
    adjusted = multipletests(raw, method=_STATSMODELS_METHOD[method])[1]
    return {key: float(p) for key, p in zip(keys, adjusted)}


# --------------------------------------------------------------------------- effect size


def bootstrap_ci(a: Sequence[float], b: Sequence[float], confidence: float = 0.95,
                 resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> Tuple[float, float]:
    """Percentile bootstrap interval of the mean difference a − b over queries (scipy.stats.bootstrap).
    (nan, nan) for fewer than two queries."""
    from scipy.stats import bootstrap

    x, y = _pair(a, b)
    difference = x - y
    if len(difference) < 2:
        return math.nan, math.nan
    if np.all(difference == difference[0]):      # every resample has the same mean; scipy would warn
        return float(difference[0]), float(difference[0])
    batch = max(1, min(resamples, 4_000_000 // len(difference)))
    result = bootstrap((difference,), np.mean, n_resamples=resamples, batch=batch, vectorized=True,
                       confidence_level=confidence, method="percentile", rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def won_lost_tied(a: Sequence[float], b: Sequence[float]) -> Tuple[int, int, int]:
    """Queries where a scores above b, below b, and the same."""
    x, y = _pair(a, b)
    return int(np.sum(x > y)), int(np.sum(x < y)), int(np.sum(x == y))


@dataclass(frozen=True)
class Comparison:
    """One condition against the baseline over the queries both have scores for."""
    queries: int
    mean_delta: float
    p_value: float                      # raw, before any correction
    ci_low: float
    ci_high: float
    won: int
    lost: int
    tied: int


def compare(a: Mapping[str, float], b: Mapping[str, float], test: str = "t", *,
            permutations: int = DEFAULT_PERMUTATIONS, resamples: int = DEFAULT_RESAMPLES,
            seed: int = DEFAULT_SEED, confidence: float = 0.95) -> Optional[Comparison]:
    """Compare per-query scores {qid: score} of a condition (a) with the baseline's (b) over the queries
    both hold; None when they share none."""
    shared = sorted(set(a) & set(b))
    if not shared:
        return None
    x, y = np.array([a[q] for q in shared], dtype=float), np.array([b[q] for q in shared], dtype=float)
    low, high = bootstrap_ci(x, y, confidence=confidence, resamples=resamples, seed=seed)
    won, lost, tied = won_lost_tied(x, y)
    return Comparison(len(shared), float(np.mean(x - y)),
                      paired_p(x, y, test, permutations=permutations, seed=seed), low, high, won, lost, tied)
