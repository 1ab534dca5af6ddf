"""The Dirichlet-Multinomial distribution of one question's vote counts.

Volunteers' answers to one question of a decision tree are counts ``x`` (one per answer)
out of ``n = sum(x)`` votes. Walmsley et al. (2022, MNRAS 509, 3966) model them as
Dirichlet-Multinomial: the answer probabilities ``p ~ Dirichlet(alpha)`` and
``x | p ~ Multinomial(n, p)``, which integrates to

    P(x | alpha) = n! Gamma(A) / Gamma(n + A) * prod_k Gamma(x_k + alpha_k)
                   / (x_k! Gamma(alpha_k)),             A = sum_k alpha_k.

A network predicts ``alpha`` per galaxy and question; the loss is ``-log P`` summed over
questions. A question with no votes has ``P = 1`` (the formula gives exactly 0), so
it carries no information and needs no mask.

From ``alpha``: the expected vote fraction of answer ``k`` is ``alpha_k / A``; its
uncertainty is the Beta(``alpha_k``, ``A - alpha_k``) marginal of the Dirichlet; and the
count of answer ``k`` among ``n`` new votes is Beta-binomial(``n``, ``alpha_k``,
``A - alpha_k``), the posterior predictive the interval coverage is measured with.

This module is numpy and scipy; :func:`dm_nll_torch` imports torch when called.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

#: The concentrations a head predicts lie in this range (a scaled sigmoid), as the
#: paper's model bounds them: at least 1 (no answer is ruled out by a few votes) and
#: at most 101 (no galaxy is more certain than about a hundred votes would make it).
CONCENTRATION_RANGE = (1.0, 101.0)


def dm_log_pmf(alpha: np.ndarray, counts: np.ndarray, groups: Sequence[Sequence[int]]
               ) -> np.ndarray:
    """``(n, questions)`` log-probabilities of each row's counts per question (0 where a
    question has no votes). ``groups``: the column indices of each question's answers."""
    from scipy.special import gammaln

    alpha = np.asarray(alpha, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    out = np.zeros((len(counts), len(groups)))
    for q, g in enumerate(groups):
        a, x = alpha[:, g], counts[:, g]
        n, total = x.sum(axis=1), a.sum(axis=1)
        out[:, q] = (gammaln(n + 1) + gammaln(total) - gammaln(n + total)
                     + (gammaln(x + a) - gammaln(x + 1) - gammaln(a)).sum(axis=1))
    return out


def dm_nll_torch(alpha: torch.Tensor, counts: torch.Tensor,
                 groups: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per row, the negative log-likelihood summed over questions (torch, differentiable
    in ``alpha``). ``groups``: a long tensor of column indices per question."""
    import torch

    total = torch.zeros(alpha.shape[0], dtype=alpha.dtype, device=alpha.device)
    for g in groups:
        a, x = alpha.index_select(1, g), counts.index_select(1, g)
        n, conc = x.sum(dim=1), a.sum(dim=1)
        log_p = (torch.lgamma(n + 1) + torch.lgamma(conc) - torch.lgamma(n + conc)
                 + (torch.lgamma(x + a) - torch.lgamma(x + 1) - torch.lgamma(a)).sum(dim=1))
        total = total - log_p
    return total


def expected_fractions(alpha: np.ndarray, groups: Sequence[Sequence[int]]) -> np.ndarray:
    """The Dirichlet mean: each answer's concentration over its question's total."""
    alpha = np.asarray(alpha, dtype=np.float64)
    out = np.empty_like(alpha)
    for g in groups:
        out[:, g] = alpha[:, g] / alpha[:, g].sum(axis=1, keepdims=True)
    return out


def question_totals(values: np.ndarray, groups: Sequence[Sequence[int]]) -> np.ndarray:
    """``(n, k)``: for each column, the sum over its question's columns (votes or
    concentration), so ``values / totals`` are shares within each question."""
    values = np.asarray(values, dtype=np.float64)
    out = np.empty_like(values)
    for g in groups:
        out[:, g] = values[:, g].sum(axis=1, keepdims=True)
    return out


def fraction_interval(alpha: np.ndarray, groups: Sequence[Sequence[int]],
                      level: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """The central ``level`` interval of each answer's fraction: percentiles of its Beta
    marginal, Beta(``alpha_k``, ``A - alpha_k``)."""
    from scipy.stats import beta

    alpha = np.asarray(alpha, dtype=np.float64)
    rest = question_totals(alpha, groups) - alpha
    tail = (1 - level) / 2
    return beta.ppf(tail, alpha, rest), beta.ppf(1 - tail, alpha, rest)


def count_pit(alpha: np.ndarray, counts: np.ndarray, groups: Sequence[Sequence[int]],
              rng: np.random.Generator) -> np.ndarray:
    """Randomised probability integral transform of every observed count under its
    Beta-binomial posterior predictive (Czado, Gneiting & Held 2009): ``F(x - 1) + v f(x)``
    with ``v`` uniform. Uniform on [0, 1] when the predicted distribution is right, so the
    share inside ``[0.05, 0.95]`` is the coverage of 90% intervals, with no excess from
    the counts being whole numbers. NaN where the question had no votes."""
    from scipy.stats import betabinom

    alpha = np.asarray(alpha, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    n = question_totals(counts, groups)
    rest = question_totals(alpha, groups) - alpha
    below = betabinom.cdf(counts - 1, n, alpha, rest)
    at = betabinom.pmf(counts, n, alpha, rest)
    pit = below + rng.random(counts.shape) * at
    return np.where(n > 0, pit, np.nan)


def count_interval_hits(alpha: np.ndarray, counts: np.ndarray,
                        groups: Sequence[Sequence[int]], level: float = 0.9) -> np.ndarray:
    """Whether each observed count lies in the closed central ``level`` interval of its
    Beta-binomial predictive (at least ``level`` of the time for a right model, more for
    few votes, where whole counts cannot split the probability finely). NaN: no votes."""
    from scipy.stats import betabinom

    alpha = np.asarray(alpha, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    n = question_totals(counts, groups)
    rest = question_totals(alpha, groups) - alpha
    tail = (1 - level) / 2
    # The interval's ends are the quantiles: the least k whose cdf reaches the tail's
    # share. The cdf is summed here over k for every entry at once (scipy's ppf solves
    # each entry alone, 0.4 s per validation of 700 galaxies, every epoch).
    lo, hi = np.full(n.shape, np.nan), np.full(n.shape, np.nan)
    cdf = np.zeros(n.shape)
    for k in range(int(n.max()) + 1 if n.size else 0):
        cdf += betabinom.pmf(k, n, alpha, rest)
        lo = np.where(np.isnan(lo) & (cdf >= tail), k, lo)
        hi = np.where(np.isnan(hi) & (cdf >= 1 - tail), k, hi)
    hi = np.where(np.isnan(hi), n, hi)  # a cdf that rounding kept below 1 - tail at n
    return np.where(n > 0, ((counts >= lo) & (counts <= hi)).astype(float), np.nan)


def fit_concentrations(counts: np.ndarray, groups: Sequence[Sequence[int]]) -> np.ndarray:
    """One concentration vector for every galaxy, per question, by maximum likelihood on
    ``counts`` (rows with no votes on a question do not count): the baseline that has
    learnt the answers' mean and spread but nothing from the images."""
    from scipy.optimize import minimize

    counts = np.asarray(counts, dtype=np.float64)
    out = np.ones(counts.shape[1])
    for g in groups:
        x = counts[:, g]
        x = x[x.sum(axis=1) > 0]
        if not len(x):
            continue
        share = x.sum(axis=0) / x.sum()
        start = np.log(np.clip(share * 5.0, 1e-3, None))

        def nll(log_a: np.ndarray, x: np.ndarray = x) -> float:
            a = np.broadcast_to(np.exp(log_a), x.shape)
            return -float(dm_log_pmf(a, x, [range(x.shape[1])]).sum())

        best = minimize(nll, start, method="L-BFGS-B", bounds=[(-7.0, 7.0)] * len(g))
        out[list(g)] = np.exp(best.x)
    return out
