"""Scores of vote-count predictions beside the baseline that knows only the training
counts: RMSE of the vote fractions (questions with votes only, plain and weighted by
votes), the Dirichlet-Multinomial negative log-likelihood per question, and the coverage of
90% predictive intervals for the observed counts, overall and for few and many votes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from skysort.tasks.dirichlet import (
    count_interval_hits,
    count_pit,
    dm_log_pmf,
    expected_fractions,
    question_totals,
)
from skysort.tasks.schema import TreeSchema
from skysort.tasks.scores import MIN_MARGIN, number

#: Fewer votes than this on a question: "few votes" in the coverage and RMSE breakdown.
FEW_VOTES = 10
#: The nominal coverage of the predictive intervals scored.
LEVEL = 0.9


def _rmse(pred: np.ndarray, true: np.ndarray, mask: np.ndarray,
          weight: np.ndarray | None = None) -> float:
    """RMSE over the entries where ``mask`` holds (weighted by ``weight``); NaN if none."""
    if not mask.any():
        return float("nan")
    err = (pred - true)[mask] ** 2
    w = np.ones_like(err) if weight is None else weight[mask]
    return float(np.sqrt((err * w).sum() / w.sum()))


def _coverage(pit: np.ndarray, mask: np.ndarray) -> float | None:
    inside = (pit >= (1 - LEVEL) / 2) & (pit <= 1 - (1 - LEVEL) / 2)
    return float(inside[mask].mean()) if mask.any() else None


def count_metrics(counts: np.ndarray, alpha: np.ndarray, baseline: np.ndarray,
                  columns: Sequence[str], schema: TreeSchema) -> dict[str, Any]:
    """Scores of concentrations ``alpha`` for observed ``counts`` (both ``(n, k)``, columns in
    ``columns`` order), beside ``baseline`` concentrations."""
    counts = np.asarray(counts, dtype=np.float64)
    alpha = np.asarray(alpha, dtype=np.float64)
    baseline = np.asarray(baseline, dtype=np.float64)
    index = {c: j for j, c in enumerate(columns)}
    groups = [[index[a] for a in q.answers] for q in schema.questions]
    votes = question_totals(counts, groups)
    asked = votes > 0
    observed = np.divide(counts, votes, out=np.zeros_like(counts), where=asked)
    model_f, base_f = expected_fractions(alpha, groups), expected_fractions(baseline, groups)
    model_ll, base_ll = dm_log_pmf(alpha, counts, groups), dm_log_pmf(baseline, counts, groups)
    pit = count_pit(alpha, counts, groups, np.random.default_rng(0))
    base_pit = count_pit(baseline, counts, groups, np.random.default_rng(0))
    hits = count_interval_hits(alpha, counts, groups, LEVEL)
    few, many = asked & (votes < FEW_VOTES), votes >= FEW_VOTES

    def scores(fractions: np.ndarray, ll: np.ndarray, p: np.ndarray) -> dict[str, Any]:
        q_asked = np.stack([asked[:, g[0]] for g in groups], axis=1) if len(counts) else \
            np.zeros((0, len(groups)), bool)
        return {"rmse": _rmse(fractions, observed, asked),
                "rmse_weighted": _rmse(fractions, observed, asked, votes),
                "rmse_few_votes": _rmse(fractions, observed, few),
                "nll": float(-ll[q_asked].mean()) if q_asked.any() else float("nan"),
                "coverage_90": _coverage(p, asked),
                "coverage_90_few_votes": _coverage(p, few),
                "coverage_90_many_votes": _coverage(p, many)}

    model, base = scores(model_f, model_ll, pit), scores(base_f, base_ll, base_pit)
    model["coverage_90_closed"] = float(np.nanmean(hits)) if asked.any() else None
    model["max_tree_error"] = float(max((abs(model_f[:, g].sum(axis=1) - 1).max()
                                         for g in groups), default=0.0)) if len(alpha) else 0.0
    per_question = {}
    for q, (question, g) in enumerate(zip(schema.questions, groups, strict=True)):
        m = asked[:, g]
        on = asked[:, g[0]]
        per_question[question.name] = {
            "galaxies_with_votes": int(on.sum()),
            "median_votes": float(np.median(votes[on, g[0]])) if on.any() else None,
            "rmse": _rmse(model_f[:, g], observed[:, g], m),
            "baseline_rmse": _rmse(base_f[:, g], observed[:, g], m),
            "rmse_weighted": _rmse(model_f[:, g], observed[:, g], m, votes[:, g]),
            "nll": float(-model_ll[on, q].mean()) if on.any() else None,
            "baseline_nll": float(-base_ll[on, q].mean()) if on.any() else None,
            "coverage_90": _coverage(pit[:, g], m)}
    rmse_model, rmse_base = model["rmse"], base["rmse"]
    gain = 1 - rmse_model / rmse_base if rmse_base and np.isfinite(rmse_base) else None
    metrics: dict[str, Any] = {
        "task": "counts", "n": len(counts), "columns": list(columns),
        "model": model,
        "baseline": {"kind": "one Dirichlet-Multinomial fitted to the training counts "
                             "(the same concentrations for every image)", **base},
        "improvement_over_baseline": gain,
        "per_question": per_question,
        "votes": {"median": float(np.median(votes[asked])) if asked.any() else None,
                  "few_votes_below": FEW_VOTES,
                  "answers_with_few_votes": int(few.sum()),
                  "answers_with_many_votes": int(many.sum())},
        "warnings": [],
    }
    if gain is not None and gain < MIN_MARGIN:
        metrics["warnings"].append(
            f"NOT BETTER THAN THE BASELINE: vote-fraction RMSE {rmse_model:.4f} is not clearly "
            f"below the {rmse_base:.4f} of predicting the training counts' mean for every image")
    cov = model["coverage_90"]
    if cov is not None and asked.sum() >= 200 and not 0.85 <= cov <= 0.95:
        metrics["warnings"].append(
            f"INTERVALS OFF: 90% predictive intervals hold {cov:.1%} of the observed counts")
    return metrics


def format_count_metrics(metrics: dict[str, Any], title: str = "") -> list[str]:
    """Plain-text lines: headline beside the baseline, then one line per question."""
    m, b = metrics["model"], metrics["baseline"]
    lines = [title or f"{metrics['n']} images",
             f"  {'metric':<30}{'model':>10}{'baseline':>10}   (baseline: one "
             "Dirichlet-Multinomial fitted to the training counts)"]
    for key, label in (("rmse", "vote-fraction RMSE"), ("rmse_weighted", "  weighted by votes"),
                       ("rmse_few_votes", f"  < {FEW_VOTES} votes"),
                       ("nll", "DM NLL per question"),
                       ("coverage_90", "90% interval coverage"),
                       ("coverage_90_few_votes", f"  < {FEW_VOTES} votes"),
                       ("coverage_90_many_votes", f"  >= {FEW_VOTES} votes")):
        lines.append(f"  {label:<30}{number(m.get(key), 4):>10}{number(b.get(key), 4):>10}")
    lines.append(f"  {'question':<30}{'RMSE':>10}{'baseline':>10}{'NLL':>9}{'baseline':>10}"
                 f"{'cover':>8}")
    for name, v in metrics["per_question"].items():
        lines.append(f"  {name[:30]:<30}{number(v['rmse'], 4):>10}"
                     f"{number(v['baseline_rmse'], 4):>10}{number(v['nll'], 3):>9}"
                     f"{number(v['baseline_nll'], 3):>10}{number(v['coverage_90'], 3):>8}")
    return lines
