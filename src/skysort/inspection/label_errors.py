"""Likely label errors by confident learning (Northcutt, Jiang and Chuang 2021, "Confident
Learning: Estimating Uncertainty in Dataset Labels", JAIR 70), on cached embeddings.

1. Out-of-fold probabilities: a logistic regression on the embeddings, fitted K times
   (stratified folds), each image scored by the model that did not see it (seconds).
2. Per class ``j`` a threshold ``t_j``: the mean probability of ``j`` over the images
   labelled ``j`` (the class's *self-confidence*).
3. An image's *confident* label is the most probable class among those whose probability
   reaches that class's threshold; counting (given, confident) labels gives the
   *confident joint*. Its off-diagonal images are suspects: the model is confidently
   sure of another class than the one given.
4. So is an image no class is confident about whose most probable class is not the given
   one (the paper's ``C_confusion``, for the images the joint leaves out). With 10 labels
   planted wrong among 180 crops of real photographs (``benchmarks/bench_label_errors.py``),
   the joint alone held a median 8.5 of them (4 at worst, over 10 seeds: the planted
   images' true class came out below its threshold of about 0.9), with these 10 (8 at
   worst), 12 suspects in all.
5. Suspects are ranked by ``p(given) / t(given)``: how far the given label's probability
   falls below what images of that class usually get (lowest first). The joint,
   calibrated to the label counts, estimates how many labels are wrong in all.

Written here from the paper (cleanlab, which implements it, is AGPL).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Folds of the out-of-fold classifier.
FOLDS = 5


@dataclass
class LabelErrors:
    """Confident learning's verdict for ``n`` images.

    Attributes:
        probabilities: ``(n, k)`` out-of-fold class probabilities.
        thresholds: ``(k,)`` per-class thresholds (mean self-confidence).
        suspected: ``(n,)`` bool: ``confident``, or no confident label and another class
            most probable.
        confident: ``(n,)`` bool, the off-diagonal of the confident joint.
        suggested: ``(n,)`` the confident label; where no class reaches its threshold, the
            most probable class for a suspect and -1 for any other image.
        score: ``(n,)`` ``p(given) / t(given)``: the lower, the more likely wrong.
        joint: ``(k, k)`` the confident joint, counts of (given, confident) labels.
        estimated_errors: labels estimated wrong in all, from the calibrated joint.
    """

    probabilities: np.ndarray
    thresholds: np.ndarray
    suspected: np.ndarray
    confident: np.ndarray
    suggested: np.ndarray
    score: np.ndarray
    joint: np.ndarray
    estimated_errors: float

    def ranking(self) -> np.ndarray:
        """Indices of the suspects, most likely wrong first."""
        index = np.flatnonzero(self.suspected)
        return index[np.argsort(self.score[index], kind="stable")]

    def spread(self, index: np.ndarray, n: int) -> LabelErrors:
        """The verdict of images ``index`` among ``n`` (the others: NaN, not suspected)."""
        def fill(values: np.ndarray, empty: object) -> np.ndarray:
            out = np.full((n, *values.shape[1:]), empty, dtype=values.dtype)
            out[index] = values
            return out

        return LabelErrors(
            probabilities=fill(self.probabilities, np.nan), thresholds=self.thresholds,
            suspected=fill(self.suspected, False), confident=fill(self.confident, False),
            suggested=fill(self.suggested, -1), score=fill(self.score, np.nan),
            joint=self.joint, estimated_errors=self.estimated_errors)


def out_of_fold_probabilities(features: np.ndarray, labels: np.ndarray, n_classes: int, *,
                              folds: int = FOLDS, seed: int = 0) -> np.ndarray:
    """``(n, n_classes)`` probabilities of each image from a classifier that did not see it
    (embeddings scaled to unit length, at most 128 principal components, multinomial
    logistic regression; stratified folds, fewer when a class has fewer than ``folds``
    images). Unit-length rows gave better-calibrated out-of-fold probabilities than
    standardised ones on simulated galaxies (log-loss 0.61 against 1.58 at the same
    accuracy), and confident learning relies on them.

    Raises:
        ValueError: a class has fewer than two images (it cannot be held out and seen).
    """
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import Normalizer

    counts = np.bincount(labels, minlength=n_classes)
    present = counts[counts > 0]
    if present.min() < 2:
        raise ValueError("a class has a single image; it cannot be scored out of fold")
    splits = int(min(folds, present.min()))
    dims = int(min(128, features.shape[1], len(features) * (splits - 1) // splits - 1))
    model = make_pipeline(Normalizer(), PCA(n_components=dims, random_state=seed),
                          LogisticRegression(C=20.0, max_iter=3000))
    cv = StratifiedKFold(n_splits=splits, shuffle=True, random_state=seed)
    probs = cross_val_predict(model, features, labels, cv=cv, method="predict_proba")
    out = np.zeros((len(labels), n_classes))
    out[:, np.flatnonzero(counts > 0)] = probs  # classes without images keep probability 0
    return out


def confident_learning(labels: np.ndarray, probabilities: np.ndarray) -> LabelErrors:
    """Confident learning on given ``labels`` and out-of-fold ``probabilities``."""
    n, k = probabilities.shape
    thresholds = np.array([probabilities[labels == j, j].mean() if (labels == j).any()
                           else 1.0 for j in range(k)])
    above = probabilities >= thresholds[None, :] - 1e-12
    masked = np.where(above, probabilities, -np.inf)
    suggested = np.where(above.any(axis=1), masked.argmax(axis=1), -1)
    joint = np.zeros((k, k), dtype=np.int64)
    sure = suggested >= 0
    np.add.at(joint, (labels[sure], suggested[sure]), 1)
    confident = sure & (suggested != labels)
    likely = probabilities.argmax(axis=1)
    unsure = ~sure & (likely != labels)
    suspected = confident | unsure
    suggested = np.where(unsure, likely, suggested)
    score = probabilities[np.arange(n), labels] / np.maximum(thresholds[labels], 1e-12)
    # Calibrate each row of the joint to the number of images given that label.
    given = np.bincount(labels, minlength=k).astype(float)
    rows = joint.sum(axis=1, keepdims=True).astype(float)
    calibrated = np.divide(joint, rows, out=np.zeros((k, k)), where=rows > 0) * given[:, None]
    estimated = float(calibrated.sum() - np.trace(calibrated))
    return LabelErrors(probabilities=probabilities, thresholds=thresholds,
                       suspected=suspected, confident=confident, suggested=suggested,
                       score=score, joint=joint,
                       estimated_errors=estimated)
