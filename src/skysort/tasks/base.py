"""The task interface, and the registry of task kinds.

A :class:`Task` answers everything that depends on the kind of target, so that no code
outside ``tasks/`` compares kind names: how targets are read from a table and from
``split.csv``, how many outputs and which output layer, the loss, the metrics beside their
baseline and which number heads them (and whether lower is better), how the outputs are
calibrated and what a calibration is measured on, which sections the report has, and what
columns the per-image rows and the prediction files hold.

Adding a kind is one subclass and ``@register_task`` (see CONTRIBUTING.md); the built-in
kinds are in ``multiclass.py``, ``binary.py``, ``multilabel.py``, ``fractions.py`` and
``counts.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np

from skysort.errors import ConfigError
from skysort.tasks.calibration import Calibration
from skysort.tasks.scores import number

if TYPE_CHECKING:  # torch is imported where a loss or an output layer is built
    import torch
    from torch import nn

    from skysort.tasks.schema import TreeSchema

LossFn = Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]
#: Table cells read as a missing value.
NAN_TEXT = frozenset({"", "nan", "na", "n/a", "null", "none"})

#: A bad target found while reading a table: (row index among the rows read, what, detail).
TargetIssue = tuple[int, str, str]
#: The columns of an evaluation's per-image rows that are not outputs.
ROW_COLUMNS = frozenset({"path", "true", "predicted", "error"})


def output_columns(names: Sequence[str], fixed: Collection[str]) -> list[str]:
    """The column of each output in a file that also has the ``fixed`` columns: its name,
    or ``prob_NAME`` where NAME is a fixed column (a class named ``true`` or ``path``),
    prefixed again while that is taken too, so every column name is unique. Outputs whose
    names clash with nothing keep them, as in files written before.
    """
    taken = {*fixed, *names}
    columns = []
    for name in names:
        column = name
        if name in fixed:
            column = f"prob_{name}"
            while column in taken:
                column = f"prob_{column}"
            taken.add(column)
        columns.append(column)
    return columns


def row_numbers(row: Sequence[str]) -> list[float] | None:
    """A table row's numbers (missing values as NaN), or None when one is not a number."""
    try:
        return [float("nan") if v.strip().lower() in NAN_TEXT else float(v) for v in row]
    except ValueError:
        return None


@dataclass
class ParsedTargets:
    """What a task kind read from a table's target columns.

    Attributes:
        classes: class names (single-label) or the output column names.
        values: one target per row (class indices, or one value per column).
        issues: rows to leave out, as :data:`TargetIssue`.
        schema: the decision tree the columns follow, if any.
    """

    classes: list[str]
    values: np.ndarray
    issues: list[TargetIssue] = field(default_factory=list)
    schema: TreeSchema | None = None


@dataclass
class Task:
    """What a model predicts and how its outputs are read; subclassed once per kind.

    Attributes:
        classes: class names (or output column names for table targets), in order.
        train_counts: training images per class (or per positive label), recorded at fit
            time; baselines and class weights come from it.
    """

    classes: list[str]
    train_counts: list[int] = field(default_factory=list)
    #: The kind's name: ``task=`` setting, ``model.json``, ``metrics.json``'s ``task``.
    kind: ClassVar[str] = ""
    #: One class per image (prediction sets, abstention, class galleries apply).
    single_label: ClassVar[bool] = False
    #: Outputs are probabilities (calibration, reliability and the class prior apply).
    probabilities: ClassVar[bool] = False
    #: The loss takes ``label_smoothing`` (so ``finetune=auto``'s recipe sets it).
    smooths_labels: ClassVar[bool] = False
    #: The headline metric's key in ``metrics["model"]``, and its direction.
    headline_key: ClassVar[str] = ""
    lower_is_better: ClassVar[bool] = False
    #: The report's sections for this kind, by name (:mod:`skysort.evaluation.report`).
    report_sections: ClassVar[tuple[str, ...]] = ()
    #: Targets are votes in a decision tree (inspect's agreement view): fractions, or
    #: counts per answer when ``vote_counts``.
    votes: ClassVar[bool] = False
    vote_counts: ClassVar[bool] = False
    #: Numeric targets: the valid range (values outside are label issues), and what it is.
    value_range: ClassVar[tuple[float, float] | None] = None
    value_rule: ClassVar[str] = ""

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def create(cls, classes: Sequence[str], schema: TreeSchema | None = None) -> Task:
        """A task of this kind over ``classes`` (``schema``: a decision tree, if any)."""
        return cls(classes=list(classes))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "classes": list(self.classes),
                "train_counts": list(self.train_counts)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Task:
        """Rebuilds a task saved by :meth:`to_dict` (in ``model.json``)."""
        from skysort.tasks.schema import TreeSchema

        schema = TreeSchema.from_dict(data["schema"]) if data.get("schema") else None
        task = cls.create(list(data["classes"]), schema)
        task.train_counts = list(data.get("train_counts", []))
        return task

    # -- reading targets ------------------------------------------------------------------

    @classmethod
    def check_classes(cls, classes: Sequence[str], where: str) -> None:
        """Raises a ConfigError when this kind cannot have these classes."""

    @classmethod
    def parse_targets(cls, columns: Sequence[str], texts: Sequence[Sequence[str]],
                      schema: TreeSchema | None = None) -> ParsedTargets:
        """Targets from table text: one number per column, each within :attr:`value_range`
        (values outside it are label issues). Single-label kinds read class names."""
        values = np.full((len(texts), len(columns)), np.nan)
        issues: list[TargetIssue] = []
        for j, text in enumerate(texts):
            row = row_numbers(text)
            if row is None:
                issues.append((j, "missing target", f"a value is not a number: "
                                                    f"{', '.join(text)}"))
            else:
                values[j] = row
        bad = {j for j, *_ in issues}
        for j, vector in enumerate(values):
            if j in bad:
                continue
            nan = [c for c, v in zip(columns, vector, strict=True) if not np.isfinite(v)]
            if nan:
                issues.append((j, "missing target", f"NaN or empty: {nan}"))
                continue
            out = cls.invalid_values(columns, vector)
            if out:
                issues.append((j, "out of range", f"{', '.join(out)}; {cls.value_rule}"))
        values = np.nan_to_num(values)
        if cls.value_range is not None:
            values = np.clip(values, *cls.value_range)
        return ParsedTargets(list(columns), values.astype(np.float32), issues, schema)

    @classmethod
    def invalid_values(cls, columns: Sequence[str], vector: np.ndarray) -> list[str]:
        """``column=value`` for each value of one row this kind cannot take."""
        if cls.value_range is None:
            return []
        lo, hi = cls.value_range
        return [f"{c}={v:g}" for c, v in zip(columns, vector, strict=True)
                if v < lo - 1e-6 or v > hi + 1e-6]

    def targets_from_text(self, labels: Sequence[str]) -> np.ndarray:
        """Targets from ``split.csv``'s label text (numbers separated by spaces)."""
        return np.array([[float(v) for v in x.split()] for x in labels], dtype=np.float32)

    def tree(self) -> TreeSchema | None:
        """The decision tree the targets follow, if any."""
        return None

    @classmethod
    def known_tree(cls, columns: Sequence[str]) -> TreeSchema | None:
        """A built-in tree whose answers are ``columns`` (targets given without a schema)."""
        return None

    def observed_fractions(self, targets: np.ndarray) -> np.ndarray:
        """The targets as the fractions the outputs estimate (NaN where undefined)."""
        return np.asarray(targets, dtype=np.float64)

    # -- the model ------------------------------------------------------------------------

    @property
    def num_outputs(self) -> int:
        return len(self.classes)

    @property
    def output_names(self) -> list[str]:
        """Names of the published outputs, in order."""
        return list(self.classes)

    def output_layer(self) -> nn.Module:
        """Logits -> published outputs."""
        raise NotImplementedError(f"{type(self).__name__}.output_layer")

    def calibrated_output(self, layer: nn.Module, calibration: Calibration) -> nn.Module:
        """The output ``layer`` after ``calibration``: ``layer(logits * scale + bias)``."""
        from skysort.tasks.tree import CalibratedOutput

        return CalibratedOutput(layer, calibration)

    def fit_statistics(self, targets: np.ndarray) -> None:
        """Records what the baselines need from the training targets."""
        self.train_counts = [len(targets)] * len(self.classes)

    def loss_fn(self, train_targets: np.ndarray, balance: str,
                label_smoothing: float = 0.0) -> LossFn:
        raise NotImplementedError(f"{type(self).__name__}.loss_fn")

    def target_tensor(self, targets: np.ndarray) -> torch.Tensor:
        import torch

        return torch.as_tensor(targets, dtype=torch.float32)

    def sample_weights(self, train_targets: np.ndarray) -> np.ndarray:
        """Per-sample weights that draw every class equally often (balanced sampling)."""
        raise sampler_error(self.kind)

    # -- reading outputs ------------------------------------------------------------------

    def predicted_class(self, outputs: np.ndarray, threshold: float = 0.5) -> np.ndarray:
        """Class index per row of published outputs (single-label tasks)."""
        raise TypeError(f"{self.kind} outputs have no predicted class; the outputs are "
                        "the prediction")

    def class_probabilities(self, outputs: np.ndarray) -> np.ndarray:
        """One probability per class (single-label), else the outputs themselves."""
        return np.asarray(outputs)

    def decisions(self, outputs: np.ndarray, threshold: float) -> np.ndarray:
        """What ``Predictor.predict`` returns for outputs of a kind with no one class."""
        return outputs

    def table_columns(self, target_columns: Sequence[str] | None) -> list[str]:
        """The output columns of a prediction file for a model trained from a table."""
        return self.output_names

    def table_values(self, outputs: np.ndarray) -> np.ndarray:
        """``(n, len(table_columns))``: the values of those columns for ``(n, outputs)``."""
        return np.asarray(outputs)

    # -- scores ---------------------------------------------------------------------------

    def metrics(self, y_true: np.ndarray, outputs: np.ndarray, *, threshold: float = 0.5,
                derived_thresholds: Sequence[float] = (0.6, 0.9)) -> dict[str, Any]:
        """The kind's metrics beside their baseline, with ``warnings`` (JSON-ready)."""
        raise NotImplementedError(f"{type(self).__name__}.metrics")

    @classmethod
    def headline(cls, metrics: dict[str, Any]) -> tuple[str, float | None, float | None]:
        """The one number to watch: (name, model, baseline)."""
        key = cls.headline_key
        return key, metrics["model"].get(key), metrics["baseline"].get(key)

    @classmethod
    def format_metrics(cls, metrics: dict[str, Any], title: str = "") -> list[str]:
        """Plain-text lines of the kind's metrics (model beside baseline)."""
        lines = [title or f"{metrics['n']} images",
                 f"  {'metric':<22}{'model':>10}{'baseline':>10}"]
        for key, value in metrics["model"].items():
            lines.append(f"  {key:<22}{number(value, 5):>10}"
                         f"{number(metrics['baseline'].get(key), 5):>10}")
        return lines

    def image_row_outputs(self) -> list[str]:
        """The columns of the outputs in the per-image rows (:func:`output_columns`)."""
        names = self.output_names
        return output_columns(names, {*ROW_COLUMNS, *(f"true_{c}" for c in names)})

    def image_row_fields(self) -> list[str]:
        """The columns of the per-image rows of an evaluation, between path and error."""
        return [*self.image_row_outputs(), *(f"true_{c}" for c in self.output_names)]

    def image_row_values(self, target: Any, outputs: np.ndarray | None,
                         threshold: float) -> list[str]:
        """One image's values for :meth:`image_row_fields` (``outputs`` None: unreadable)."""
        values = ["" for _ in self.output_names] if outputs is None else \
            [f"{v:.8f}" for v in outputs]
        return [*values, *(f"{v:.8f}" for v in np.atleast_1d(target))]

    # -- calibration ----------------------------------------------------------------------

    def fit_calibration(self, logits: np.ndarray, targets: np.ndarray) -> Calibration:
        """The kind's calibration fitted on all of ``logits`` and ``targets``."""
        return Calibration.identity(self.num_outputs, f"{self.kind} outputs are not "
                                    "probabilities", reason=self.kind)

    def calibration_nll(self, logits: np.ndarray, targets: np.ndarray) -> float:
        """The negative log-likelihood calibration lowers (kinds with probabilities)."""
        raise NotImplementedError(f"{type(self).__name__}.calibration_nll")

    def calibration_events(self, outputs: np.ndarray, targets: np.ndarray
                           ) -> tuple[np.ndarray, np.ndarray]:
        """``(probabilities, one-hot truth)`` of the predictions whose calibration is
        measured, one row per prediction."""
        raise NotImplementedError(f"{type(self).__name__}.calibration_events")

    def prior_outputs(self, targets: np.ndarray) -> tuple[np.ndarray, str]:
        """The outputs of a model that learned nothing, and what they are."""
        raise NotImplementedError(f"{type(self).__name__}.prior_outputs")

    def keep_calibration(self, calibration: Calibration, threshold: float) -> Calibration:
        """``calibration``, or the identity where it would change a decision."""
        return calibration

    def calibrated_threshold(self, calibration: Calibration, threshold: float) -> float:
        """The decision threshold on the calibrated outputs."""
        return threshold

    def describe_calibration(self, calibration: Calibration, threshold: float) -> str:
        """What the fitted calibration is, in words."""
        if calibration.method != "temperature":
            return calibration.method
        if len(set(calibration.scale)) == 1:
            return f"temperature {1 / calibration.scale[0]:.3f}"
        return f"a temperature per label ({', '.join(f'{1 / s:.2f}' for s in calibration.scale)})"


# -- the registry -----------------------------------------------------------------------------

_REGISTRY: dict[str, type[Task]] = {}
T = TypeVar("T", bound=type[Task])


def register_task(cls: T) -> T:
    """Class decorator: makes ``cls.kind`` a task kind (``task=KIND``, ``model.json``)."""
    if not cls.kind or cls.kind == "auto":
        raise ValueError(f"{cls.__name__}: a task kind needs a name other than 'auto'")
    _REGISTRY[cls.kind] = cls
    return cls


def task_kinds() -> tuple[str, ...]:
    """The registered kinds, in order of registration (``skysort.tasks`` registers the
    built-in ones when imported)."""
    return tuple(_REGISTRY)


def task_class(kind: str) -> type[Task]:
    """The class of a task kind; a ConfigError lists the valid kinds."""
    kinds = task_kinds()
    if kind not in _REGISTRY:
        raise ConfigError(f"task {kind!r} is not one of {', '.join(kinds)}")
    return _REGISTRY[kind]


def single_label_kinds() -> tuple[str, ...]:
    return tuple(k for k in task_kinds() if _REGISTRY[k].single_label)


def make_task(kind: str, classes: Sequence[str], schema: TreeSchema | None = None) -> Task:
    """A task of ``kind`` over ``classes`` (the output column names)."""
    cls = task_class(kind)
    cls.check_classes(classes, f"a {kind} task")
    return cls.create(classes, schema)


def task_from_dict(data: dict[str, Any]) -> Task:
    """Rebuilds a task saved by ``Task.to_dict`` (in ``model.json``)."""
    return task_class(data.get("kind", "multiclass")).from_dict(data)


def check_balance(kind: str, balance: str) -> None:
    """``balance=sampler`` draws each class equally often, so it needs one class per
    image: a ConfigError for multi-label and vote-fraction targets."""
    if balance == "sampler" and not task_class(kind).single_label:
        raise sampler_error(kind)


def sampler_error(kind: str) -> ConfigError:
    return ConfigError(f"balance=sampler draws every class equally often, and {kind} targets "
                       "have no one class per image; use balance=weights (weights in the "
                       "loss) or balance=none")
