"""Output layers: the decision tree of vote fractions (see :mod:`skysort.tasks.schema`),
the Dirichlet concentrations of vote counts, and each kind's layer after calibration."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from skysort.errors import ConfigError
from skysort.tasks.calibration import Calibration
from skysort.tasks.dirichlet import CONCENTRATION_RANGE
from skysort.tasks.schema import TreeSchema


class TreeOutput(nn.Module):
    """Logits (one per answer, in ``columns`` order) -> fractions that obey the tree.

    Each question's answers get a softmax and are multiplied by the parent answer's
    value, so they sum to it exactly. Built from gathers, softmaxes, products and one
    concatenation, so it exports to ONNX.
    """

    def __init__(self, schema: TreeSchema, columns: Sequence[str]) -> None:
        super().__init__()
        if not schema.matches(columns):
            raise ConfigError(f"columns {list(columns)} do not match schema {schema.name!r} "
                              f"({schema.columns})")
        position = {c: i for i, c in enumerate(columns)}
        self.groups = [[position[a] for a in q.answers] for q in schema.tree_order]
        tree_order = [a for q in schema.tree_order for a in q.answers]
        where = {a: i for i, a in enumerate(tree_order)}
        self.parents = [None if q.parent is None else where[q.parent] for q in schema.tree_order]
        for i, group in enumerate(self.groups):
            self.register_buffer(f"group{i}", torch.tensor(group, dtype=torch.long),
                                 persistent=False)
        # Concatenated in tree order; this permutation puts them back in column order.
        self.register_buffer("order", torch.tensor([where[c] for c in columns], dtype=torch.long),
                             persistent=False)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        pieces: list[torch.Tensor] = []
        for i, parent in enumerate(self.parents):
            group: torch.Tensor = getattr(self, f"group{i}")
            probs = torch.softmax(logits.index_select(1, group), dim=1)
            if parent is not None:
                done = torch.cat(pieces, dim=1)
                probs = probs * done[:, parent:parent + 1]
            pieces.append(probs)
        order: torch.Tensor = self.order  # type: ignore[assignment]
        return torch.cat(pieces, dim=1).index_select(1, order)


class ConcentrationOutput(nn.Module):
    """Logits -> Dirichlet concentrations in
    :data:`~skysort.tasks.dirichlet.CONCENTRATION_RANGE` (a scaled sigmoid), one per
    answer, for vote counts."""

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        low, high = CONCENTRATION_RANGE
        return low + (high - low) * torch.sigmoid(logits)


class CalibratedOutput(nn.Module):
    """``layer(logits * scale + bias)``: the task's output layer after calibration."""

    def __init__(self, layer: nn.Module, calibration: Calibration) -> None:
        super().__init__()
        self.layer = layer
        # Not in the state dict: model.json holds the numbers, model.safetensors the weights.
        self.register_buffer("scale", torch.tensor(calibration.scale, dtype=torch.float32),
                             persistent=False)
        self.register_buffer("bias", torch.tensor(calibration.bias, dtype=torch.float32),
                             persistent=False)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        scale: torch.Tensor = self.scale  # type: ignore[assignment]
        bias: torch.Tensor = self.bias  # type: ignore[assignment]
        return self.layer(logits * scale.to(logits) + bias.to(logits))  # device and dtype


class ScaledConcentrations(nn.Module):
    """``layer(logits) * scale``: Dirichlet concentrations scaled per answer (the same
    factor for a question's answers), which widens or narrows every interval and keeps
    every expected fraction."""

    def __init__(self, layer: nn.Module, calibration: Calibration) -> None:
        super().__init__()
        self.layer = layer
        self.register_buffer("scale", torch.tensor(calibration.scale, dtype=torch.float32),
                             persistent=False)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        scale: torch.Tensor = self.scale  # type: ignore[assignment]
        return self.layer(logits) * scale.to(logits)
