"""Whether 0.8 means 80%: calibration fitted on the validation split, and its metrics.

Fitting (:func:`fit_calibration`) asks the task kind for its map (``Task.fit_calibration``:
one temperature for a softmax (Guo et al. 2017), Platt's slope and intercept for a binary
sigmoid (with Platt's smoothed targets), one temperature per label for multi-label; each a
convex problem in the logits' scale, solved in milliseconds by scipy) and keeps it only
when it helps validation images it was not fitted on.

Measuring (:func:`calibration_report`): the expected calibration error (ECE, 15 equal-width
bins of top-label confidence) and its worst bin (MCE), negative log-likelihood and Brier
score, for the calibrated outputs, the uncalibrated ones, and the class-prior predictor
(every image gets the training share of each class: what a model that learned nothing
gets), with the reliability-diagram bins. Multi-label outputs count each (image, label)
pair as one yes/no prediction. :func:`risk_coverage` gives the accuracy of the images
kept as a confidence threshold rises (abstention).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from skysort.data.sources import LabeledImages
from skysort.models.info import ModelInfo
from skysort.tasks import Task
from skysort.tasks.calibration import MIN_CALIBRATION_IMAGES, Calibration
from skysort.tasks.scores import number

if TYPE_CHECKING:
    import torch

    from skysort.models.model import SkyModel

#: ECE above this after calibration: a warning that probabilities are still off.
POOR_ECE = 0.1
BINS = 15
#: The kept fractions ``evaluate`` prints the accuracy of.
KEPT_FRACTIONS = (1.0, 0.9, 0.75, 0.5)
EPS = 1e-12


# -- fitting ----------------------------------------------------------------------------------


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
    if not task.probabilities:
        return task.fit_calibration(z, y)
    if n < MIN_CALIBRATION_IMAGES:
        return Calibration.identity(k, f"the validation split has {n} readable image(s); "
                                       f"calibration needs at least {MIN_CALIBRATION_IMAGES}",
                                    fitted_on=n, reason="too_few")
    fitted = task.fit_calibration(z, y)
    if fitted.method == "none":
        return fitted
    halves = np.array_split(np.random.default_rng(0).permutation(n), 2)
    held_out, own = 0.0, 0.0
    for fit_on, check in (halves, halves[::-1]):
        part = task.fit_calibration(z[fit_on], y[fit_on])
        held_out += len(check) * task.calibration_nll(part.apply(z[check]), y[check])
        own += len(check) * task.calibration_nll(z[check], y[check])
    fitted.extra["held_out_nll"] = {"calibrated": held_out / n, "uncalibrated": own / n}
    if not held_out < own:
        return Calibration.identity(
            k, f"{fitted.method} scaling did not lower the NLL of validation images it was "
               f"not fitted on ({held_out / n:.4f} against the model's own {own / n:.4f}, "
               "2-fold); the model's own probabilities are kept", fitted_on=n,
            reason="no_gain")
    return fitted


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


def calibration_report(task: Task, targets: np.ndarray, outputs: np.ndarray,
                       uncalibrated: np.ndarray | None = None,
                       calibration: Calibration | None = None) -> dict[str, Any]:
    """ECE, MCE, NLL, Brier and reliability bins of ``outputs`` (the published outputs),
    beside the uncalibrated outputs (when the model is calibrated) and the class prior.

    Returns:
        ``method``, ``fitted_on``, ``model`` (with ``bins``, the reliability diagram),
        ``uncalibrated`` (same keys, or None), ``baseline`` and ``warnings``.
    """
    model = _scores(*task.calibration_events(outputs, targets))
    prior, kind = task.prior_outputs(targets)
    baseline = _scores(*task.calibration_events(prior, targets))
    baseline.pop("bins", None)
    calibrated = calibration is not None and calibration.method != "none"
    before = _scores(*task.calibration_events(uncalibrated, targets)) \
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


# -- after training ---------------------------------------------------------------------------


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
                              device=device, which="logits")
    calibration = task.keep_calibration(fit_calibration(task, logits, val.targets, method),
                                        threshold)
    model.calibrate(calibration)
    info.calibration = calibration
    info.threshold = task.calibrated_threshold(calibration, threshold)
    if task.single_label and len(val):
        with torch.inference_mode():
            outputs = model.output(torch.from_numpy(logits).to(next(model.parameters()).device))
        probs = task.class_probabilities(outputs.float().cpu().numpy())
        info.conformal = conformity_scores(probs, val.targets, task.classes)
    if calibration.method == "none":
        return f"calibration: none ({calibration.note})"
    what = task.describe_calibration(calibration, threshold)
    return (f"calibration: {what}, fitted on {calibration.fitted_on} validation images "
            f"(their NLL {calibration.nll_before:.4f} -> {calibration.nll_after:.4f})")


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
            lines.append(f"  {name:<20}{number(v['ece']):>8}{number(v['mce']):>8}"
                         f"{number(v['nll']):>8}{number(v['brier']):>8}")
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
