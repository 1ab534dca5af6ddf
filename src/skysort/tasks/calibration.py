"""A model's calibration: an affine map of its logits, saved with the model.

``logits * scale + bias``, one ``scale`` and ``bias`` per output, applied before the task's
output layer (:class:`skysort.models.model.SkyModel`), so every predictor (torch, ONNX
Runtime, Ray) and the exported graph give the same calibrated probabilities:

* ``temperature`` (Guo et al. 2017), for a softmax: every logit divided by one
  temperature ``T`` (``scale = 1/T``, no bias);
* ``platt`` (Platt 1999), for a binary sigmoid: ``sigmoid(a * z + b)``;
* ``temperature`` per label, for multi-label sigmoids;
* ``concentration``, for vote counts: Dirichlet concentrations multiplied by one factor per
  question (``scale``; the output layer applies it after the concentrations, not to the
  logits: :meth:`skysort.tasks.base.Task.calibrated_output`);
* ``none``: the identity (``calibrate=none``, vote fractions, or too few validation
  images to fit it).

Scales are positive, so a softmax's ranking of classes (its predicted class) never changes.
A binary model's decision threshold is moved through the same map
(:meth:`Calibration.threshold`), so its predicted class does not change either.

Each task kind says which map it fits (``Task.fit_calibration``, from the one-dimensional
problems at the end of this module); :mod:`skysort.evaluation.calibration` decides whether
to keep it and measures it. This module has no torch, so reading ``model.json`` for
prediction never imports it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Fewer readable validation images than this: no calibration (too few to fit it).
MIN_CALIBRATION_IMAGES = 50
CALIBRATION_METHODS = ("temperature", "platt", "concentration", "none")


@dataclass
class Calibration:
    """``logits * scale + bias`` per output, and how it was fitted.

    Attributes:
        method: one of :data:`CALIBRATION_METHODS`.
        scale, bias: one value per output (the number of logits).
        fitted_on: validation images it was fitted on.
        nll_before, nll_after: their negative log-likelihood before and after.
        note: why it is the identity, when it is (empty otherwise).
        reason: the same as a word: ``off`` (``calibrate=none``), ``fractions``,
            ``too_few`` (validation images), ``no_gain`` (it did not help held-out images),
            ``threshold`` (multi-label with a threshold other than 0.5).
    """

    method: str
    scale: list[float]
    bias: list[float]
    fitted_on: int = 0
    nll_before: float | None = None
    nll_after: float | None = None
    note: str = ""
    reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def identity(cls, outputs: int, note: str = "", fitted_on: int = 0,
                 reason: str = "") -> Calibration:
        return cls(method="none", scale=[1.0] * outputs, bias=[0.0] * outputs,
                   fitted_on=fitted_on, note=note, reason=reason)

    @property
    def is_identity(self) -> bool:
        return all(s == 1.0 for s in self.scale) and all(b == 0.0 for b in self.bias)

    @property
    def temperature(self) -> float | None:
        """The one temperature of a softmax's temperature scaling (else None)."""
        if self.method != "temperature" or len(set(self.scale)) != 1:
            return None
        return 1.0 / self.scale[0]

    def apply(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated logits, in float64."""
        return np.asarray(logits, dtype=np.float64) * np.asarray(self.scale) + \
            np.asarray(self.bias)

    def threshold(self, uncalibrated: float) -> float:
        """Where a binary decision threshold on the uncalibrated probability lies on the
        calibrated one: images are called positive exactly as before."""
        z = math.log(uncalibrated / (1 - uncalibrated))
        return 1.0 / (1.0 + math.exp(-(z * self.scale[0] + self.bias[0])))

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "scale": list(self.scale), "bias": list(self.bias),
                "fitted_on": self.fitted_on, "nll_before": self.nll_before,
                "nll_after": self.nll_after, "note": self.note, "reason": self.reason,
                **self.extra}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        known = {"method", "scale", "bias", "fitted_on", "nll_before", "nll_after", "note",
                 "reason"}
        scale = [float(v) for v in data["scale"]]
        bias = [float(v) for v in data["bias"]]
        if data["method"] not in CALIBRATION_METHODS or len(scale) != len(bias) or \
                any(not s > 0 or not math.isfinite(s) for s in scale) or \
                any(not math.isfinite(b) for b in bias):
            raise ValueError(f"calibration {data!r}: needs a method of {CALIBRATION_METHODS} "
                             "and one positive, finite scale and one finite bias per output")
        return cls(method=str(data["method"]), scale=scale, bias=bias,
                   fitted_on=int(data.get("fitted_on", 0)), nll_before=data.get("nll_before"),
                   nll_after=data.get("nll_after"), note=str(data.get("note", "")),
                   reason=str(data.get("reason", "")),
                   extra={k: v for k, v in data.items() if k not in known})


# -- fitting: the convex one-dimensional problems each kind's calibration solves -------------


def softmax_nll(logits: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-likelihood of class indices ``y`` under ``softmax(logits)``."""
    from scipy.special import log_softmax

    return float(-np.mean(log_softmax(logits, axis=1)[np.arange(len(y)), y]))


def sigmoid_nll(z: np.ndarray, t: np.ndarray) -> float:
    """Mean negative log-likelihood of 0/1 (or smoothed) targets under ``sigmoid(z)``."""
    from scipy.special import log_expit

    return float(-np.mean(t * log_expit(z) + (1 - t) * log_expit(-z)))


def best_scale(nll: Any) -> float:
    """The positive scale that minimises ``nll(scale)`` (convex in it); 1 unless it helps."""
    from scipy.optimize import minimize_scalar

    result = minimize_scalar(nll, bounds=(1e-3, 100.0), method="bounded",
                             options={"xatol": 1e-6})
    return float(result.x) if nll(result.x) < nll(1.0) else 1.0


def platt(z: np.ndarray, y: np.ndarray, n: int) -> Calibration:
    """Platt scaling with Platt's targets ``(N+ + 1) / (N+ + 2)`` and ``1 / (N- + 2)``,
    which keep a separable validation split from driving the slope to infinity."""
    from scipy.optimize import minimize

    pos = float(y.sum())
    t = np.where(y > 0.5, (pos + 1) / (pos + 2), 1 / (n - pos + 2))
    result = minimize(lambda ab: sigmoid_nll(z * ab[0] + ab[1], t), x0=np.array([1.0, 0.0]),
                      method="L-BFGS-B", bounds=[(1e-3, 100.0), (-50.0, 50.0)])
    a, b = (float(v) for v in result.x)
    before = sigmoid_nll(z, y)
    after = sigmoid_nll(z * a + b, y)
    if not after < before:
        return Calibration.identity(1, "Platt scaling did not lower the validation loss",
                                    fitted_on=n, reason="no_gain")
    return Calibration("platt", [a], [b], fitted_on=n, nll_before=before, nll_after=after)
