"""Whether 0.8 means 80%: calibration fitted on the validation split, and its metrics.

Fitting (:func:`fit_calibration`) minimises the negative log-likelihood of the validation
split's logits over the parameters of :class:`~skysort.models.calibration.Calibration`:
one temperature for a softmax (Guo et al. 2017), Platt's slope and intercept for a binary
sigmoid (with Platt's smoothed targets), one temperature per label for multi-label. Each
is a convex problem in the logits' scale, solved in milliseconds by scipy.

Measuring (:func:`calibration_report`): the expected calibration error (ECE, 15 equal-width
bins of top-label confidence) and its worst bin (MCE), negative log-likelihood and Brier
score, for the calibrated outputs, the uncalibrated ones, and the class-prior predictor
(every image gets the training share of each class: what a model that learned nothing
gets), with the reliability-diagram bins. Multi-label outputs count each (image, label)
pair as one yes/no prediction. :func:`risk_coverage` gives the accuracy of the images
kept as a confidence threshold rises (abstention).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from skysort.data.sources import LabeledImages
from skysort.models.calibration import Calibration
from skysort.models.info import ModelInfo
from skysort.tasks import Task

if TYPE_CHECKING:
    import torch

    from skysort.models.model import SkyModel

#: Fewer validation images than this: calibration is not fitted (a warning says so).
MIN_CALIBRATION_IMAGES = 50
#: ECE above this after calibration: a warning that probabilities are still off.
POOR_ECE = 0.1
BINS = 15
#: The kept fractions ``evaluate`` prints the accuracy of.
KEPT_FRACTIONS = (1.0, 0.9, 0.75, 0.5)
EPS = 1e-12


# -- fitting ----------------------------------------------------------------------------------


def _softmax_nll(logits: np.ndarray, y: np.ndarray) -> float:
    from scipy.special import log_softmax

    return float(-np.mean(log_softmax(logits, axis=1)[np.arange(len(y)), y]))


def _sigmoid_nll(z: np.ndarray, t: np.ndarray) -> float:
    from scipy.special import log_expit

    return float(-np.mean(t * log_expit(z) + (1 - t) * log_expit(-z)))


def _best_scale(nll: Any) -> float:
    """The positive scale that minimises ``nll(scale)`` (convex in it)."""
    from scipy.optimize import minimize_scalar

    result = minimize_scalar(nll, bounds=(1e-3, 100.0), method="bounded",
                             options={"xatol": 1e-6})
    return float(result.x) if nll(result.x) < nll(1.0) else 1.0


def fit_calibration(task: Task, logits: np.ndarray, targets: np.ndarray,
                    method: str = "auto") -> Calibration:
    """The calibration of ``task``'s logits that fits the validation targets best.

    It is kept only when it also helps images it was not fitted on: fitted on each half of
    the validation split, it must lower the other half's negative log-likelihood (2-fold
    cross-fitting). A model whose own probabilities are already as good is left alone, so
    calibration never makes the test NLL worse by fitting noise.

    Args:
        logits: ``(n, num_outputs)`` validation logits (rows with NaN are left out).
        targets: the validation targets (class indices, or 0/1 per label).
        method: ``auto`` (the method of the task's kind) or ``none``.
    """
    k = task.num_outputs
    ok = ~np.isnan(logits).any(axis=1)
    z, y = np.asarray(logits, dtype=np.float64)[ok], np.asarray(targets)[ok]
    n = len(z)
    if method == "none":
        return Calibration.identity(k, "calibrate=none", reason="off")
    if task.kind == "fractions":
        return Calibration.identity(k, "vote fractions are regression targets, not "
                                       "probabilities; their residuals are reported instead",
                                    reason="fractions")
    if n < MIN_CALIBRATION_IMAGES:
        return Calibration.identity(k, f"the validation split has {n} readable image(s); "
                                       f"calibration needs at least {MIN_CALIBRATION_IMAGES}",
                                    fitted_on=n, reason="too_few")
    fitted = _fit(task.kind, z, y)
    if fitted.method == "none":
        return fitted
    halves = np.array_split(np.random.default_rng(0).permutation(n), 2)
    held_out, own = 0.0, 0.0
    for fit_on, check in (halves, halves[::-1]):
        part = _fit(task.kind, z[fit_on], y[fit_on])
        held_out += len(check) * _nll(task.kind, part.apply(z[check]), y[check])
        own += len(check) * _nll(task.kind, z[check], y[check])
    fitted.extra["held_out_nll"] = {"calibrated": held_out / n, "uncalibrated": own / n}
    if not held_out < own:
        return Calibration.identity(
            k, f"{fitted.method} scaling did not lower the NLL of validation images it was "
               f"not fitted on ({held_out / n:.4f} against the model's own {own / n:.4f}, "
               "2-fold); the model's own probabilities are kept", fitted_on=n,
            reason="no_gain")
    return fitted


def _nll(kind: str, z: np.ndarray, y: np.ndarray) -> float:
    if kind == "multiclass":
        return _softmax_nll(z, y.astype(np.int64))
    if kind == "binary":
        return _sigmoid_nll(z[:, 0], y.astype(np.float64))
    return float(np.mean([_sigmoid_nll(z[:, j], y[:, j].astype(np.float64))
                          for j in range(z.shape[1])]))


def _fit(kind: str, z: np.ndarray, y: np.ndarray) -> Calibration:
    """The calibration of ``kind`` fitted on all of ``z``, ``y``."""
    n, k = z.shape
    if kind == "multiclass":
        y = y.astype(np.int64)
        scale = _best_scale(lambda s: _softmax_nll(z * s, y))
        return Calibration("temperature", [scale] * k, [0.0] * k, fitted_on=n,
                           nll_before=_nll(kind, z, y), nll_after=_softmax_nll(z * scale, y))
    if kind == "binary":
        return _platt(z[:, 0], y.astype(np.float64), n)
    # multi-label: one temperature per label, fitted on that label's column
    y = y.astype(np.float64)
    scales = []
    for j in range(k):
        col, t = z[:, j], y[:, j]
        both = 0 < t.sum() < len(t)
        scales.append(_best_scale(lambda s, c=col, t=t: _sigmoid_nll(c * s, t))
                      if both else 1.0)
    return Calibration("temperature", scales, [0.0] * k, fitted_on=n,
                       nll_before=_nll(kind, z, y), nll_after=_nll(kind, z * np.array(scales), y))


def _platt(z: np.ndarray, y: np.ndarray, n: int) -> Calibration:
    """Platt scaling with Platt's targets ``(N+ + 1) / (N+ + 2)`` and ``1 / (N- + 2)``,
    which keep a separable validation split from driving the slope to infinity."""
    from scipy.optimize import minimize

    pos = float(y.sum())
    t = np.where(y > 0.5, (pos + 1) / (pos + 2), 1 / (n - pos + 2))
    result = minimize(lambda ab: _sigmoid_nll(z * ab[0] + ab[1], t), x0=np.array([1.0, 0.0]),
                      method="L-BFGS-B", bounds=[(1e-3, 100.0), (-50.0, 50.0)])
    a, b = (float(v) for v in result.x)
    before = _sigmoid_nll(z, y)
    after = _sigmoid_nll(z * a + b, y)
    if not after < before:
        return Calibration.identity(1, "Platt scaling did not lower the validation loss",
                                    fitted_on=n, reason="no_gain")
    return Calibration("platt", [a], [b], fitted_on=n, nll_before=before, nll_after=after)


# -- measuring --------------------------------------------------------------------------------


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, bins: int = BINS
                     ) -> list[dict[str, Any]]:
    """Equal-width bins of confidence: range, count, mean confidence, accuracy."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    out = []
    for b in range(bins):
        inside = which == b
        count = int(inside.sum())
        out.append({"lower": float(edges[b]), "upper": float(edges[b + 1]), "count": count,
                    "confidence": float(confidence[inside].mean()) if count else None,
                    "accuracy": float(correct[inside].mean()) if count else None})
    return out


def _scores(probs: np.ndarray, onehot: np.ndarray) -> dict[str, Any]:
    """ECE, MCE, NLL and Brier score of ``(n, k)`` probabilities against one-hot truth.
    For two columns (a yes/no prediction) the Brier score is the usual binary one,
    ``mean((p - y)^2)``; for more, the multi-class sum over classes."""
    n = len(probs)
    if n == 0:
        return {"ece": None, "mce": None, "nll": None, "brier": None}
    confidence = probs.max(axis=1)
    correct = onehot[np.arange(n), probs.argmax(axis=1)] > 0.5
    bins = reliability_bins(confidence, correct)
    gaps = [(b["count"], abs(b["accuracy"] - b["confidence"])) for b in bins if b["count"]]
    return {
        "ece": float(sum(c * g for c, g in gaps) / n),
        "mce": float(max(g for _, g in gaps)),
        "nll": float(-np.mean(np.log(np.clip((probs * onehot).sum(axis=1), EPS, 1.0)))),
        "brier": float(np.mean(((probs - onehot) ** 2).sum(axis=1))
                       / (2 if probs.shape[1] == 2 else 1)),
        "bins": bins,
    }


def _events(task: Task, outputs: np.ndarray, targets: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """``(probabilities, one-hot truth)`` of the predictions whose calibration is measured:
    one row per image for single-label tasks, per (image, label) pair for multi-label."""
    if task.single_label:
        probs = task.class_probabilities(outputs).astype(np.float64)
        return probs, np.eye(probs.shape[1])[np.asarray(targets, dtype=np.int64)]
    p = np.asarray(outputs, dtype=np.float64).reshape(-1, 1)
    t = np.asarray(targets, dtype=np.float64).reshape(-1, 1)
    return np.concatenate([1 - p, p], axis=1), np.concatenate([1 - t, t], axis=1)


def _prior(task: Task, targets: np.ndarray) -> tuple[np.ndarray, str]:
    """The class-prior predictor's probabilities for these images."""
    if task.single_label:
        counts = np.asarray(task.train_counts, dtype=np.float64)
        if counts.sum() == 0:
            counts = np.bincount(np.asarray(targets, dtype=np.int64),
                                 minlength=len(task.classes)).astype(np.float64)
        share = counts / counts.sum()
        share = share if task.kind == "multiclass" else share[1:]
        return np.broadcast_to(share, (len(targets), len(share))), "training share of each class"
    prevalence = np.asarray(targets, dtype=np.float64).mean(axis=0)
    return np.broadcast_to(prevalence, np.shape(targets)), "share of each label among these images"


def calibration_report(task: Task, targets: np.ndarray, outputs: np.ndarray,
                       uncalibrated: np.ndarray | None = None,
                       calibration: Calibration | None = None) -> dict[str, Any]:
    """ECE, MCE, NLL, Brier and reliability bins of ``outputs`` (the published outputs),
    beside the uncalibrated outputs (when the model is calibrated) and the class prior.

    Returns:
        ``method``, ``fitted_on``, ``model`` (with ``bins``, the reliability diagram),
        ``uncalibrated`` (same keys, or None), ``baseline`` and ``warnings``.
    """
    model = _scores(*_events(task, outputs, targets))
    prior, kind = _prior(task, targets)
    baseline = _scores(*_events(task, prior, targets))
    baseline.pop("bins", None)
    calibrated = calibration is not None and calibration.method != "none"
    before = _scores(*_events(task, uncalibrated, targets)) \
        if calibrated and uncalibrated is not None else None
    warnings = []
    if calibration is not None and calibration.reason == "too_few":
        warnings.append(f"NOT CALIBRATED: {calibration.note}; probabilities are the model's "
                        "own and may be over-confident")
    if model["ece"] is not None and model["ece"] > POOR_ECE and len(targets) >= 2 * BINS:
        warnings.append(
            f"POOR CALIBRATION: expected calibration error {model['ece']:.3f} "
            f"{'even after calibration' if calibrated else '(uncalibrated)'} (above "
            f"{POOR_ECE}); a probability of 0.8 does not mean 80% here, so do not threshold "
            "it as if it did")
    return {"method": calibration.method if calibration else "none",
            "fitted_on": calibration.fitted_on if calibration else 0,
            "temperature": calibration.temperature if calibration else None,
            "note": calibration.note if calibration else "no calibration was fitted",
            "bins_count": BINS, "model": model, "uncalibrated": before,
            "baseline": {"kind": f"class prior ({kind})", **baseline}, "warnings": warnings}


def risk_coverage(confidence: np.ndarray, correct: np.ndarray, points: int = 50
                  ) -> dict[str, Any]:
    """Accuracy of the images kept when only the most confident are kept.

    Returns:
        ``curve``: ``points`` rows of (kept fraction, confidence threshold, accuracy), from
        all images kept to the most confident few; ``at``: the accuracy at each of
        :data:`KEPT_FRACTIONS`.
    """
    n = len(confidence)
    if n == 0:
        return {"curve": [], "at": {}}
    order = np.argsort(-confidence, kind="stable")
    hits = np.cumsum(correct[order].astype(np.float64))

    def at(fraction: float) -> dict[str, float]:
        kept = max(1, round(fraction * n))
        return {"kept": kept / n, "threshold": float(confidence[order][kept - 1]),
                "accuracy": float(hits[kept - 1] / kept)}

    fractions = np.linspace(1.0, 1.0 / min(n, points), min(n, points))
    return {"curve": [at(float(f)) for f in fractions],
            "at": {f"{f:g}": at(f) for f in KEPT_FRACTIONS}}


def residual_spread(y_true: np.ndarray, pred: np.ndarray, columns: Sequence[str]
                    ) -> dict[str, dict[str, float]]:
    """Per vote-fraction answer: mean residual (bias), its standard deviation, and its 5th
    and 95th percentiles (``predicted - true``)."""
    out: dict[str, dict[str, float]] = {}
    residual = np.asarray(pred, dtype=np.float64) - np.asarray(y_true, dtype=np.float64)
    for j, c in enumerate(columns):
        r = residual[:, j]
        out[c] = {"mean": float(r.mean()), "std": float(r.std()),
                  "p05": float(np.percentile(r, 5)), "p95": float(np.percentile(r, 95))} \
            if len(r) else {"mean": float("nan"), "std": float("nan"), "p05": float("nan"),
                            "p95": float("nan")}
    return out


# -- after training ---------------------------------------------------------------------------


def keeping_decisions(task: Task, calibration: Calibration, threshold: float) -> Calibration:
    """``calibration``, or the identity where it would change a decision: a multi-label
    temperature keeps the decisions at 0.5 only, and one threshold serves all labels
    (a binary model's threshold moves with Platt's map instead)."""
    if task.kind == "multilabel" and calibration.method != "none" and threshold != 0.5:
        return Calibration.identity(
            task.num_outputs, f"per-label temperatures would move the decisions at "
                              f"threshold={threshold:g}; train with threshold=0.5 to calibrate",
            fitted_on=calibration.fitted_on, reason="threshold")
    return calibration


def calibrate_model(model: SkyModel, info: ModelInfo, val: LabeledImages, method: str, *,
                    threshold: float, cache_dir: str | Path | None = None,
                    workers: int | None = None, device: torch.device | str = "cpu") -> str:
    """Fits the calibration on the validation images, puts it in ``model`` and ``info``
    (with a binary model's threshold moved so that no decision changes), and keeps the
    validation images' conformity scores for prediction sets. Returns a line to print."""
    import torch

    from skysort.evaluation.conformal import conformity_scores
    from skysort.models.runners import model_outputs

    task = info.task
    logits, _ = model_outputs(model, info, val.paths, cache_dir=cache_dir, workers=workers,
                              device=device, kind="logits")
    calibration = keeping_decisions(task, fit_calibration(task, logits, val.targets, method),
                                    threshold)
    model.calibrate(calibration)
    info.calibration = calibration
    info.threshold = calibration.threshold(threshold) if task.kind == "binary" and \
        calibration.method != "none" else threshold
    if task.single_label and len(val):
        with torch.inference_mode():
            outputs = model.output(torch.from_numpy(logits).to(next(model.parameters()).device))
        probs = task.class_probabilities(outputs.float().cpu().numpy())
        info.conformal = conformity_scores(probs, val.targets, task.classes)
    if calibration.method == "none":
        return f"calibration: none ({calibration.note})"
    what = {"temperature": f"temperature {1 / calibration.scale[0]:.3f}"
            if len(set(calibration.scale)) == 1 else
            f"a temperature per label ({', '.join(f'{1 / s:.2f}' for s in calibration.scale)})",
            "platt": f"Platt scaling (slope {calibration.scale[0]:.3f}, intercept "
                     f"{calibration.bias[0]:+.3f}; threshold {threshold:g} is now "
                     f"{info.threshold:.4f})"}[calibration.method]
    return (f"calibration: {what}, fitted on {calibration.fitted_on} validation images "
            f"(their NLL {calibration.nll_before:.4f} -> {calibration.nll_after:.4f})")


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def format_probability_metrics(metrics: dict[str, Any]) -> list[str]:
    """Lines for the screen: calibration beside the uncalibrated outputs and the prior,
    accuracy at a few kept fractions, and the prediction sets' coverage."""
    lines: list[str] = []
    cal = metrics.get("calibration")
    if cal and cal["model"]["ece"] is not None:
        fitted = "" if cal["method"] == "none" else \
            f", fitted on {cal['fitted_on']} validation images"
        lines += ["", f"  probabilities (calibration: {cal['method']}{fitted})",
                  f"  {'':<20}{'ECE':>8}{'MCE':>8}{'NLL':>8}{'Brier':>8}"]
        rows = [("calibrated" if cal["method"] != "none" else "model", cal["model"])]
        if cal.get("uncalibrated"):
            rows.append(("before calibration", cal["uncalibrated"]))
        rows.append(("class prior", cal["baseline"]))
        for name, v in rows:
            lines.append(f"  {name:<20}{_num(v['ece']):>8}{_num(v['mce']):>8}"
                         f"{_num(v['nll']):>8}{_num(v['brier']):>8}")
    risk = metrics.get("risk_coverage")
    if risk and risk["at"]:
        lines += ["", "  keeping only the most confident images (abstaining on the rest):"]
        for f, v in risk["at"].items():
            lines.append(f"    keep {float(f):>4.0%}: accuracy {v['accuracy']:.3f} "
                         f"(probability at least {v['threshold']:.3f})")
    sets = metrics.get("prediction_sets")
    if sets:
        lines += ["", f"  prediction sets (conformal, calibrated on {sets['fitted_on']} "
                      "validation images):"]
        for c, v in sets["by_coverage"].items():
            if v["n"]:
                lines.append(f"    at {float(c):.0%} coverage: true class in the set for "
                             f"{v['coverage']:.1%}, mean set size {v['mean_size']:.2f}, "
                             f"{v['single']:.0%} get a single label, {v['empty']:.0%} none"
                             + (f"; over all classes, not per class: too few "
                                f"validation images of {', '.join(v['too_rare'])}"
                                if v.get("too_rare") else ""))
    return lines
