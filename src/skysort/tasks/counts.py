"""Vote counts per answer, grouped by question in a decision tree (Galaxy Zoo 2, GZ DECaLS
and later catalogues): a Dirichlet-Multinomial likelihood per question
(:mod:`skysort.tasks.dirichlet`), so 2 votes weigh less than 40 and a question nobody was
asked carries no information. The model's published outputs are Dirichlet concentrations,
one per answer; everything else (expected fractions, their intervals, the tree product) is
computed from them the same way wherever a model runs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from skysort.errors import ConfigError
from skysort.tasks.base import LossFn, Task, register_task
from skysort.tasks.calibration import MIN_CALIBRATION_IMAGES, Calibration
from skysort.tasks.count_scores import count_metrics, format_count_metrics
from skysort.tasks.dirichlet import (
    CONCENTRATION_RANGE,
    dm_log_pmf,
    expected_fractions,
    fit_concentrations,
    fraction_interval,
    question_totals,
)
from skysort.tasks.schema import BUILTIN_SCHEMAS, COUNT_SCHEMAS, Question, TreeSchema

if TYPE_CHECKING:
    import torch
    from torch import nn

#: The interval each prediction gives for each answer's vote fraction.
INTERVAL_LEVEL = 0.9
#: What a prediction file holds per answer, after the answer's name.
PREDICTION_SUFFIXES = ("_fraction", "_lo", "_hi")


def one_question(answers: Sequence[str]) -> TreeSchema:
    """The tree of a count table with no schema: one question whose answers are all the
    columns (votes for one of several classes)."""
    return TreeSchema(questions=[Question("votes", tuple(answers), None)], name="one question")


@register_task
@dataclass
class CountsTask(Task):
    """Vote counts per answer; outputs are Dirichlet concentrations per answer.

    Attributes:
        schema: the decision tree (questions and their answers); one question when the
            table came with none.
        train_alpha: the one concentration vector fitted to the training counts by maximum
            likelihood: the baseline, which knows the answers' mean and spread but not the
            image.
    """

    schema: TreeSchema | None = None
    train_alpha: list[float] = field(default_factory=list)
    kind: ClassVar[str] = "counts"
    headline_key: ClassVar[str] = "rmse"
    lower_is_better: ClassVar[bool] = True
    report_sections: ClassVar[tuple[str, ...]] = ("counts",)
    votes: ClassVar[bool] = True
    vote_counts: ClassVar[bool] = True
    value_range: ClassVar[tuple[float, float] | None] = (0.0, float("inf"))
    value_rule: ClassVar[str] = "vote counts are whole numbers >= 0"

    def __post_init__(self) -> None:
        if self.schema is None:
            self.schema = one_question(self.classes)
        if not self.schema.matches(self.classes):
            raise ConfigError(f"count columns {self.classes} do not match the answers of tree "
                              f"{self.schema.name!r}: {self.schema.columns}")

    @classmethod
    def create(cls, classes: Sequence[str], schema: TreeSchema | None = None) -> Task:
        return cls(classes=list(classes), schema=schema)

    def tree(self) -> TreeSchema | None:
        return self.schema

    @classmethod
    def known_tree(cls, columns: Sequence[str]) -> TreeSchema | None:
        """A built-in count tree (or whole questions of one) named as ``columns``."""
        for name in COUNT_SCHEMAS:
            tree = BUILTIN_SCHEMAS[name]().subtree(columns)
            if tree is not None and tree.matches(columns):
                return tree
        return None

    def observed_fractions(self, targets: np.ndarray) -> np.ndarray:
        """Each answer's share of its question's votes; NaN where nobody answered."""
        counts = np.asarray(targets, dtype=np.float64)
        votes = question_totals(counts, self.groups)
        return np.divide(counts, votes, out=np.full_like(counts, np.nan), where=votes > 0)

    def to_dict(self) -> dict[str, Any]:
        assert self.schema is not None
        return {**super().to_dict(), "train_alpha": list(self.train_alpha),
                "schema": self.schema.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Task:
        task = super().from_dict(data)
        assert isinstance(task, CountsTask)
        task.train_alpha = list(data.get("train_alpha", []))
        return task

    @property
    def groups(self) -> list[list[int]]:
        """The output columns of each question, in the schema's order."""
        assert self.schema is not None
        index = {c: j for j, c in enumerate(self.classes)}
        return [[index[a] for a in q.answers] for q in self.schema.questions]

    # -- reading targets ------------------------------------------------------------------

    @classmethod
    def invalid_values(cls, columns: Sequence[str], vector: np.ndarray) -> list[str]:
        return [f"{c}={v:g}" for c, v in zip(columns, vector, strict=True)
                if v < 0 or not float(v).is_integer()]

    # -- the model ------------------------------------------------------------------------

    def output_layer(self) -> nn.Module:
        from skysort.tasks.tree import ConcentrationOutput

        return ConcentrationOutput()

    def fit_statistics(self, targets: np.ndarray) -> None:
        self.train_alpha = fit_concentrations(targets, self.groups).tolist()
        self.train_counts = [len(targets)] * len(self.classes)

    def loss_fn(self, train_targets: np.ndarray, balance: str,
                label_smoothing: float = 0.0) -> LossFn:
        import torch

        from skysort.tasks.dirichlet import dm_nll_torch

        layer = self.output_layer()
        groups = [torch.tensor(g, dtype=torch.long) for g in self.groups]

        def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            on = [g.to(logits.device) for g in groups]
            return dm_nll_torch(layer(logits.float()), targets.float(), on).mean()

        return loss

    # -- reading outputs ------------------------------------------------------------------

    def fractions(self, outputs: np.ndarray) -> np.ndarray:
        """Expected vote fraction of each answer within its question (sums to 1 per
        question), from the concentrations."""
        return expected_fractions(outputs, self.groups)

    def intervals(self, outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The 5th and 95th percentiles of each answer's fraction (its Beta marginal)."""
        return fraction_interval(outputs, self.groups, INTERVAL_LEVEL)

    def tree_product(self, outputs: np.ndarray) -> np.ndarray:
        """The Kaggle Galaxy Zoo form: each answer's expected fraction times its parent
        answer's value, down the tree (root questions sum to 1, every other question to its
        parent answer's value)."""
        assert self.schema is not None
        share = self.fractions(outputs)
        index = {c: j for j, c in enumerate(self.classes)}
        out = np.empty_like(share)
        for q in self.schema.tree_order:
            cols = [index[a] for a in q.answers]
            parent = out[:, index[q.parent]][:, None] if q.parent else 1.0
            out[:, cols] = share[:, cols] * parent
        return out

    def decisions(self, outputs: np.ndarray, threshold: float) -> np.ndarray:
        return self.fractions(outputs)

    def table_columns(self, target_columns: Sequence[str] | None) -> list[str]:
        return [f"{a}{s}" for a in self.classes for s in PREDICTION_SUFFIXES]

    def table_values(self, outputs: np.ndarray) -> np.ndarray:
        lo, hi = self.intervals(outputs)
        return np.stack([self.fractions(outputs), lo, hi], axis=2).reshape(len(outputs), -1)

    def image_row_fields(self) -> list[str]:
        names = self.image_row_outputs()
        return [*names, *(f"{a}_lo" for a in self.classes), *(f"{a}_hi" for a in self.classes),
                *(f"true_{a}" for a in self.classes)]

    def image_row_values(self, target: Any, outputs: np.ndarray | None,
                         threshold: float) -> list[str]:
        k = len(self.classes)
        if outputs is None:
            values = [""] * (3 * k)
        else:
            lo, hi = self.intervals(outputs[None])
            values = [f"{v:.8f}" for v in (*self.fractions(outputs[None])[0], *lo[0], *hi[0])]
        return [*values, *(f"{int(v)}" for v in np.atleast_1d(target))]

    # -- scores ---------------------------------------------------------------------------

    def metrics(self, y_true: np.ndarray, outputs: np.ndarray, *, threshold: float = 0.5,
                derived_thresholds: Sequence[float] = (0.6, 0.9)) -> dict[str, Any]:
        assert self.schema is not None
        baseline = np.broadcast_to(np.asarray(self.train_alpha, dtype=np.float64),
                                   np.shape(outputs))
        return count_metrics(y_true, outputs, baseline, self.classes, self.schema)

    @classmethod
    def format_metrics(cls, metrics: dict[str, Any], title: str = "") -> list[str]:
        return format_count_metrics(metrics, title)

    def concentrations(self, logits: np.ndarray) -> np.ndarray:
        """The uncalibrated output layer, in numpy (float64)."""
        low, high = CONCENTRATION_RANGE
        return low + (high - low) / (1 + np.exp(-np.asarray(logits, dtype=np.float64)))

    def calibrated_output(self, layer: nn.Module, calibration: Calibration) -> nn.Module:
        from skysort.tasks.tree import ScaledConcentrations

        return ScaledConcentrations(layer, calibration)

    def calibration_nll(self, logits: np.ndarray, targets: np.ndarray,
                        scale: np.ndarray | None = None) -> float:
        """Mean Dirichlet-Multinomial NLL per image (summed over questions) of the
        concentrations times ``scale``."""
        alpha = self.concentrations(logits) * (1.0 if scale is None else scale)
        return float(-dm_log_pmf(alpha, targets, self.groups).sum(axis=1).mean())

    def fit_calibration(self, logits: np.ndarray, targets: np.ndarray) -> Calibration:
        """One factor per question on the concentrations, fitted by maximum likelihood on
        the validation counts (interval widths, not fractions, change). Kept only when it
        also lowers the NLL of validation images it was not fitted on (2-fold), as the
        other kinds' calibrations are."""
        k, n = self.num_outputs, len(logits)
        if n < MIN_CALIBRATION_IMAGES:
            return Calibration.identity(k, f"the validation split has {n} readable "
                                        f"image(s); calibration needs at least "
                                        f"{MIN_CALIBRATION_IMAGES}", fitted_on=n,
                                        reason="too_few")
        scale = self._fit_scale(logits, targets)
        halves = np.array_split(np.random.default_rng(0).permutation(n), 2)
        held_out = own = 0.0
        for fit_on, check in (halves, halves[::-1]):
            part = self._fit_scale(logits[fit_on], targets[fit_on])
            held_out += len(check) * self.calibration_nll(logits[check], targets[check], part)
            own += len(check) * self.calibration_nll(logits[check], targets[check])
        before = self.calibration_nll(logits, targets)
        if not held_out < own:
            return Calibration.identity(k, "scaling the concentrations did not lower the NLL "
                                        f"of validation images it was not fitted on "
                                        f"({held_out / n:.4f} against {own / n:.4f}, 2-fold)",
                                        fitted_on=n, reason="no_gain")
        return Calibration(method="concentration", scale=scale.tolist(), bias=[0.0] * k,
                           fitted_on=n, nll_before=before,
                           nll_after=self.calibration_nll(logits, targets, scale),
                           extra={"held_out_nll": {"calibrated": held_out / n,
                                                   "uncalibrated": own / n}})

    def _fit_scale(self, logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
        from scipy.optimize import minimize_scalar

        alpha = self.concentrations(logits)
        scale = np.ones(self.num_outputs)
        for g in self.groups:
            if not (targets[:, g].sum(axis=1) > 0).any():
                continue

            def nll(log_s: float, g: list[int] = g) -> float:
                return -float(dm_log_pmf(alpha[:, g] * np.exp(log_s), targets[:, g],
                                         [range(len(g))]).sum())

            best = minimize_scalar(nll, bounds=(-4.0, 3.0), method="bounded")
            scale[g] = float(np.exp(best.x))
        return scale

    def describe_calibration(self, calibration: Calibration, threshold: float) -> str:
        assert self.schema is not None
        factors = ", ".join(f"{q.name} x{calibration.scale[g[0]]:.2f}"
                            for q, g in zip(self.schema.questions, self.groups, strict=True))
        return f"concentrations scaled per question ({factors})"
