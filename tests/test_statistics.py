"""Paired tests, corrections and bootstrap intervals against independent computations: textbook formulas
and scipy on real per-query nDCG@10 (two lexical rankings of the bundled SciFact test queries, scored by
ir_measures), an exact enumeration of every sign flip or resample on small cases, and corrections worked
by hand."""

from __future__ import annotations

import gzip
import itertools
import json
import math
import re
from collections import Counter

import numpy as np
import pytest

from conftest import REPO
from dupmae_eval.errors import DupMAEEvalError
from dupmae_eval.evaluation import statistics as st


def _bm25_rankings(settings, depth=100):
    """{name: {qid: {docid: score}}}: BM25 over title + abstract with each (k1, b), written here from the
    formula (Lucene's idf), on the SciFact corpus and its 300 test queries."""
    from scipy import sparse

    tokenize = re.compile(r"[a-z0-9]+").findall
    with gzip.open(REPO / "data" / "scifact" / "corpus.jsonl.gz", "rt") as corpus:
        records = [json.loads(line) for line in corpus]
    qrels_lines = (REPO / "data" / "scifact" / "qrels" / "test.tsv").read_text().splitlines()[1:]
    test_ids = {line.split("\t")[0] for line in qrels_lines}
    with gzip.open(REPO / "data" / "scifact" / "queries.jsonl.gz", "rt") as lines:
        queries = {q["_id"]: q["text"] for q in map(json.loads, lines) if q["_id"] in test_ids}
    vocabulary, rows, cols, counts = {}, [], [], []
    for row, record in enumerate(records):
        for term, count in Counter(tokenize(f"{record['title']} {record['text']}".lower())).items():
            rows.append(row)
            cols.append(vocabulary.setdefault(term, len(vocabulary)))
            counts.append(count)
    tf = sparse.csr_matrix((counts, (rows, cols)), shape=(len(records), len(vocabulary)), dtype=float)
    length = np.asarray(tf.sum(axis=1)).ravel()
    df = np.bincount(cols, minlength=len(vocabulary))
    idf = np.log(1 + (len(records) - df + 0.5) / (df + 0.5))
    query_matrix = np.zeros((len(queries), len(vocabulary)))
    for row, text in enumerate(queries.values()):
        for term in tokenize(text.lower()):
            if term in vocabulary:
                query_matrix[row, vocabulary[term]] += 1
    rankings = {}
    for name, (k1, b) in settings.items():
        weights = tf.tocoo()
        norm = k1 * (1 - b + b * length / length.mean())
        data = weights.data * (k1 + 1) / (weights.data + norm[weights.row]) * idf[weights.col]
        scores = (sparse.csr_matrix((data, (weights.row, weights.col)), shape=tf.shape) @ query_matrix.T).T
        run = {}
        for row, qid in enumerate(queries):
            top = np.argsort(-scores[row], kind="stable")[:depth]
            run[qid] = {records[i]["_id"]: float(scores[row, i]) for i in top}
        rankings[name] = run
    return rankings


@pytest.fixture(scope="module")
def scifact_ndcg():
    """Per-query nDCG@10 of two BM25 settings on SciFact's 300 test queries, as two aligned arrays."""
    import ir_measures

    qrels = {}
    for line in (REPO / "data" / "scifact" / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        qid, docid, grade = line.split("\t")
        qrels.setdefault(qid, {})[docid] = int(grade)
    runs = _bm25_rankings({"a": (0.9, 0.4), "b": (1.2, 0.75)})
    scores = {}
    for name, run in runs.items():
        scores[name] = {m.query_id: m.value for m in ir_measures.iter_calc([ir_measures.nDCG @ 10], qrels, run)}
    assert set(scores["a"]) == set(scores["b"]) and len(scores["a"]) == 300
    qids = sorted(scores["a"])
    a, b = np.array([scores["a"][q] for q in qids]), np.array([scores["b"][q] for q in qids])
    assert 0.55 < a.mean() < 0.75 and 0 < np.sum(a != b) < 300     # a real, partly tied comparison
    return a, b


# --------------------------------------------------------------------------- t and Wilcoxon


def test_paired_t_equals_scipy_and_the_textbook_formula(scifact_ndcg):
    from scipy.stats import t as t_distribution
    from scipy.stats import ttest_rel

    a, b = scifact_ndcg
    p = st.paired_t(a, b)
    assert p == pytest.approx(ttest_rel(a, b).pvalue, abs=1e-6)
    d = a - b
    t = d.mean() / (d.std(ddof=1) / math.sqrt(len(d)))
    assert p == pytest.approx(2 * t_distribution.sf(abs(t), len(d) - 1), abs=1e-6)
    assert st.paired_t(b, a) == pytest.approx(p, abs=1e-12)       # two-sided


def test_wilcoxon_equals_scipy_and_the_normal_approximation_worked_here(scifact_ndcg):
    from scipy.stats import wilcoxon

    a, b = scifact_ndcg
    p = st.wilcoxon(a, b)
    assert p == pytest.approx(wilcoxon(a, b).pvalue, abs=1e-6)
    # by hand: equal pairs dropped, mid-ranks of |d| for ties, tie-corrected variance, no continuity correction
    d = (a - b)[a != b]
    n = len(d)
    order = np.abs(d)
    ranks = np.array([np.sum(order < x) + (np.sum(order == x) + 1) / 2 for x in order])
    plus = ranks[d > 0].sum()
    ties = sum(c ** 3 - c for c in Counter(order.tolist()).values())
    variance = n * (n + 1) * (2 * n + 1) / 24 - ties / 48
    z = (plus - n * (n + 1) / 4) / math.sqrt(variance)
    assert p == pytest.approx(math.erfc(abs(z) / math.sqrt(2)), abs=1e-6)


def test_small_untied_wilcoxon_uses_the_exact_distribution():
    from scipy.stats import wilcoxon

    d = np.array([0.3, -0.1, 0.25, 0.05, 0.4, -0.2, 0.15, 0.35])        # distinct |d|: ranks 1..8
    ranks = np.argsort(np.argsort(np.abs(d))) + 1
    observed = ranks[d > 0].sum()
    # all 2^8 sign patterns of the ranks: P(T+ >= observed), doubled
    at_least = sum(sum(r for r, s in zip(range(1, 9), signs) if s) >= observed
                   for signs in itertools.product((0, 1), repeat=8))
    exact = min(1.0, 2 * at_least / 2 ** 8)
    assert st.wilcoxon(d, np.zeros_like(d)) == pytest.approx(exact, abs=1e-9)
    assert st.wilcoxon(d, np.zeros_like(d)) == pytest.approx(wilcoxon(d).pvalue, abs=1e-6)


def test_identical_scores_have_no_evidence_of_a_difference():
    same = [0.1, 0.5, 0.5, 0.9]
    for test in st.TESTS:
        assert st.paired_p(same, same, test) == 1.0
        assert st.paired_p([0.3], [0.1], test) == 1.0                  # one query: nothing to test


# --------------------------------------------------------------------------- randomization


def _exact_sign_flip_p(d):
    """Share of all 2^n sign flips whose |mean| reaches the observed |mean| (two-sided, exact)."""
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=len(d))))
    means = signs @ d / len(d)
    observed = abs(d.mean())
    return float(np.mean(np.abs(means) >= observed - 1e-12))


def test_randomization_enumerates_every_flip_when_there_are_fewer_than_the_permutations():
    rng = np.random.default_rng(11)
    a = rng.random(12)
    b = a - rng.normal(0.08, 0.15, 12)                       # 2^12 = 4,096 flips < 10,000
    exact = _exact_sign_flip_p(a - b)
    assert 0.01 < exact < 0.5
    assert st.randomization(a, b) == pytest.approx(exact, abs=1e-12)
    assert st.randomization(a, b, seed=123) == pytest.approx(exact, abs=1e-12)


@pytest.mark.parametrize("n, shift", [(16, 0.08), (18, 0.03)])
def test_randomization_is_within_monte_carlo_error_of_the_exact_enumeration(n, shift):
    rng = np.random.default_rng(n)
    a = rng.random(n)
    b = a - rng.normal(shift, 0.2, n)                         # 2^16, 2^18 flips > 10,000: sampled
    exact = _exact_sign_flip_p(a - b)
    assert 0.005 < exact < 0.9
    permutations = 10_000
    standard_error = math.sqrt(exact * (1 - exact) / permutations)
    for seed in (0, 1, 2):
        p = st.randomization(a, b, permutations=permutations, seed=seed)
        # (b + 1) / (N + 1), doubled: at most 2 / (N + 1) above the plain share, plus sampling error
        assert abs(p - exact) <= 4 * standard_error + 2 / (permutations + 1), (seed, p, exact)
    assert st.randomization(a, b, seed=5) == st.randomization(a, b, seed=5)                # seeded
    assert st.randomization(b, a, seed=5) == pytest.approx(st.randomization(a, b, seed=5))  # two-sided


def test_randomization_never_says_zero():
    a, b = np.full(40, 0.9), np.full(40, 0.1)                 # every flip but one is less extreme
    b[0] = 0.2
    assert st.randomization(a, b) == pytest.approx(2 / 10_001)   # (0 + 1) / (N + 1) on each side, doubled


def test_randomization_agrees_with_the_t_test_on_real_scores(scifact_ndcg):
    a, b = scifact_ndcg
    p = st.randomization(a, b)
    assert p == st.randomization(a, b)
    assert p == pytest.approx(st.paired_t(a, b), abs=0.02)       # n = 300: the t approximation is close


def test_fewer_than_ten_thousand_permutations_are_refused():
    with pytest.raises(DupMAEEvalError, match="at least 10,000"):
        st.randomization([0.1, 0.2], [0.2, 0.1], permutations=999)


# --------------------------------------------------------------------------- corrections

# Five p-values, corrected by hand (m = 5):
#   Bonferroni: p * 5, capped at 1.
#   Holm, step-down on the sorted p: d .005*5 = .025; a .01*4 = .04; c .03*3 = .09; b .04*2 = .08 -> .09
#     (running maximum); e .6*1 = .6.
#   BH, step-up: p(i) * m / i = d .025, a .025, c .05, b .05, e .6; running minimum from the largest
#     leaves them as they are.
RAW = {"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.005, "e": 0.6}
BY_HAND = {
    "bonferroni": {"a": 0.05, "b": 0.20, "c": 0.15, "d": 0.025, "e": 1.0},
    "holm": {"a": 0.04, "b": 0.09, "c": 0.09, "d": 0.025, "e": 0.6},
    "bh": {"a": 0.025, "b": 0.05, "c": 0.05, "d": 0.025, "e": 0.6},
    "none": RAW,
}


@pytest.mark.parametrize("method", st.CORRECTIONS)
def test_corrections_equal_the_hand_worked_example(method):
    adjusted = st.correct(RAW, method)
    assert list(adjusted) == list(RAW)
    assert adjusted == pytest.approx(BY_HAND[method], abs=1e-12)


def test_bh_step_up_lowers_an_earlier_p_value():
    # p(i) * m / i = .03, .04, .0375, .04: the running minimum from the top lowers .04 (second) to .0375
    adjusted = st.correct({"w": 0.0075, "x": 0.02, "y": 0.028125, "z": 0.04}, "bh")
    assert adjusted == pytest.approx({"w": 0.03, "x": 0.0375, "y": 0.0375, "z": 0.04}, abs=1e-12)


def test_an_empty_family_and_unknown_names():
    assert st.correct({}, "holm") == {}
    with pytest.raises(DupMAEEvalError, match=r"^--correction 'fdr': choose one of holm, bonferroni, bh, none$"):
        st.correct(RAW, "fdr")
    with pytest.raises(DupMAEEvalError, match=r"^--test 'mann-whitney': choose one of t, randomization, wilcoxon$"):
        st.paired_p([0.1, 0.2], [0.2, 0.3], "mann-whitney")
    for alpha in ("0", "1", "1.5", "-0.1", "nan", "five"):
        with pytest.raises(DupMAEEvalError, match=r"^--alpha "):
            st.check_alpha(alpha)
    assert st.check_alpha("0.01") == 0.01


# --------------------------------------------------------------------------- bootstrap, won/lost/tied


def test_bootstrap_interval_matches_the_exact_bootstrap_distribution():
    d = np.array([0.31, -0.12, 0.05, 0.22, -0.03, 0.17])
    # every one of the 6^6 equally likely resamples, and the distribution of their means
    means = np.sort(d[np.array(list(itertools.product(range(6), repeat=6)))].mean(axis=1))
    low, high = st.bootstrap_ci(d, np.zeros_like(d))
    below_low, below_high = np.searchsorted(means, [low, high]) / len(means)
    error = 4 * math.sqrt(0.025 * 0.975 / 10_000)              # four standard errors of a 2.5 % quantile
    assert abs(below_low - 0.025) <= error and abs(below_high - 0.975) <= error
    assert st.bootstrap_ci(d, np.zeros_like(d)) == (low, high)                  # seeded
    assert st.bootstrap_ci(d, np.zeros_like(d), seed=1) != (low, high)


def test_bootstrap_interval_on_real_scores_is_close_to_the_t_interval(scifact_ndcg):
    from scipy.stats import t as t_distribution

    a, b = scifact_ndcg
    d = a - b
    low, high = st.bootstrap_ci(a, b)
    half = t_distribution.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    assert low < d.mean() < high
    assert low == pytest.approx(d.mean() - half, abs=0.15 * half)
    assert high == pytest.approx(d.mean() + half, abs=0.15 * half)


def test_constant_difference_and_too_few_queries():
    assert st.bootstrap_ci([0.5, 0.6, 0.7], [0.4, 0.5, 0.6]) == pytest.approx((0.1, 0.1))
    assert all(math.isnan(x) for x in st.bootstrap_ci([0.5], [0.4]))


def test_compare_counts_queries_won_lost_and_tied_over_the_shared_queries(scifact_ndcg):
    a, b = scifact_ndcg
    won = sum(1 for x, y in zip(a.tolist(), b.tolist()) if x > y)
    lost = sum(1 for x, y in zip(a.tolist(), b.tolist()) if x < y)
    assert st.won_lost_tied(a, b) == (won, lost, 300 - won - lost)
    condition = {f"q{i:03d}": float(x) for i, x in enumerate(a)}      # ids sort in the arrays' order
    baseline = {f"q{i:03d}": float(y) for i, y in enumerate(b)}
    baseline["only-in-baseline"] = 0.0
    result = st.compare(condition, baseline, "wilcoxon")
    assert (result.queries, result.won, result.lost, result.tied) == (300, won, lost, 300 - won - lost)
    assert result.mean_delta == pytest.approx(float(np.mean(a - b)))
    assert result.p_value == pytest.approx(st.wilcoxon(a, b))
    assert (result.ci_low, result.ci_high) == st.bootstrap_ci(a, b)
    assert st.compare({"x": 1.0}, {"y": 1.0}) is None


def test_randomization_leaves_equal_queries_out_and_is_then_exact():
    """300 queries, 288 of them scored alike (as two close conditions often are): flipping a zero difference
    changes no sum, so the test is the one over the 12 that differ, whose 4,096 flips are enumerated: the exact
    p-value, where sampling 2^300 flips gave it within Monte Carlo error only. One differing query: p = 1."""
    rng = np.random.default_rng(3)
    a = rng.random(300)
    b = a.copy()
    moved = rng.choice(300, 12, replace=False)
    b[moved] = a[moved] - rng.normal(0.08, 0.15, 12)
    exact = _exact_sign_flip_p((a - b)[moved])
    assert 0.01 < exact < 0.5
    assert st.randomization(a, b) == pytest.approx(exact, abs=1e-12)
    assert st.randomization(a, b, seed=9) == pytest.approx(exact, abs=1e-12)
    c = a.copy()
    c[0] += 0.5
    assert st.randomization(a, c) == 1.0
