"""Vote counts: the Dirichlet-Multinomial likelihood against scipy, the intervals against
samples of the distribution, the coverage of calibrated predictive intervals, the
baseline's fit, and count catalogues recognised from their header (GZ DECaLS, GZ2)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from skysort.data.tables import read_csv_table
from skysort.errors import LabelError
from skysort.tasks import make_task
from skysort.tasks.counts import CountsTask
from skysort.tasks.dirichlet import (
    count_interval_hits,
    count_pit,
    dm_log_pmf,
    dm_nll_torch,
    fit_concentrations,
    fraction_interval,
)
from skysort.tasks.schema import gz2_schema, gz_decals_schema

GROUPS = [[0, 1, 2], [3, 4]]


def _draw(alpha: np.ndarray, votes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Counts drawn as the model says: p ~ Dirichlet(alpha), x ~ Multinomial(n, p)."""
    out = np.zeros_like(alpha)
    for i, (a, n) in enumerate(zip(alpha, votes, strict=True)):
        for g in GROUPS:
            out[i, g] = rng.multinomial(int(n), rng.dirichlet(a[g]))
    return out


def test_dm_log_pmf_matches_scipy_and_the_beta_binomial() -> None:
    rng = np.random.default_rng(0)
    alpha = rng.uniform(0.5, 30, size=(40, 5))
    counts = _draw(alpha, rng.integers(0, 40, size=40), rng)
    ours = dm_log_pmf(alpha, counts, GROUPS)
    for i in range(40):
        x = counts[i, :3]
        expected = stats.dirichlet_multinomial.logpmf(x, alpha[i, :3], int(x.sum())) \
            if x.sum() else 0.0
        assert ours[i, 0] == pytest.approx(expected, abs=1e-9)
        # Two answers: the Beta-binomial.
        two = counts[i, 3:]
        assert ours[i, 1] == pytest.approx(
            stats.betabinom.logpmf(two[0], two.sum(), alpha[i, 3], alpha[i, 4]), abs=1e-9)
    # No votes on a question: no information, exactly 0.
    assert dm_log_pmf(alpha[:1], np.zeros((1, 5)), GROUPS).tolist() == [[0.0, 0.0]]


def test_the_torch_loss_is_the_numpy_nll_and_has_gradients() -> None:
    rng = np.random.default_rng(1)
    alpha = rng.uniform(1, 50, size=(16, 5))
    counts = _draw(alpha, rng.integers(0, 30, size=16), rng)
    a = torch.tensor(alpha, requires_grad=True)
    nll = dm_nll_torch(a, torch.tensor(counts), [torch.tensor(g) for g in GROUPS])
    np.testing.assert_allclose(nll.detach().numpy(), -dm_log_pmf(alpha, counts, GROUPS).sum(1),
                               rtol=1e-10)
    nll.sum().backward()
    assert a.grad is not None and torch.isfinite(a.grad).all()


def test_the_task_loss_is_the_mean_nll_of_the_bounded_concentrations() -> None:
    task = make_task("counts", ["a", "b", "c"])
    logits = torch.randn(8, 3, dtype=torch.float64)
    counts = torch.tensor(np.random.default_rng(2).integers(0, 9, size=(8, 3)), dtype=torch.float64)
    alpha = 1 + 100 * torch.sigmoid(logits)  # the bounds, written out
    expected = -dm_log_pmf(alpha.numpy(), counts.numpy(), [[0, 1, 2]]).sum(1).mean()
    loss = task.loss_fn(counts.numpy(), "none")(logits, counts)
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_fraction_interval_is_that_of_dirichlet_samples() -> None:
    alpha = np.array([[2.0, 5.0, 1.5, 30.0, 4.0]])
    lo, hi = fraction_interval(alpha, GROUPS, 0.9)
    rng = np.random.default_rng(3)
    for g in GROUPS:
        samples = rng.dirichlet(alpha[0, g], size=200_000)
        np.testing.assert_allclose(lo[0, g], np.percentile(samples, 5, axis=0), atol=4e-3)
        np.testing.assert_allclose(hi[0, g], np.percentile(samples, 95, axis=0), atol=4e-3)


@pytest.mark.parametrize("votes", [(2, 9), (10, 50)])
def test_intervals_of_the_true_distribution_cover_90_percent(votes: tuple[int, int]) -> None:
    rng = np.random.default_rng(4)
    alpha = rng.uniform(1, 40, size=(3000, 5))
    counts = _draw(alpha, rng.integers(*votes, size=3000), rng)
    pit = count_pit(alpha, counts, GROUPS, rng)
    inside = ((pit >= 0.05) & (pit <= 0.95)).mean()
    n = pit.size
    assert abs(inside - 0.9) < 3 * np.sqrt(0.09 / n) + 0.002
    # The closed interval of whole counts covers at least 90%.
    assert np.nanmean(count_interval_hits(alpha, counts, GROUPS)) >= 0.9
    # Intervals of a distribution far too confident cover much less, where there are
    # enough votes to tell (with a few, the multinomial's own spread dominates).
    tight = count_pit(alpha * 30, counts, GROUPS, rng)
    assert ((tight >= 0.05) & (tight <= 0.95)).mean() < (0.85 if votes[0] >= 10 else 0.9)


def test_interval_ends_are_scipys_beta_binomial_quantiles() -> None:
    """The closed interval's ends, summed over whole counts for all galaxies at once, are
    scipy's own quantiles of each entry's Beta-binomial (solved one by one)."""
    rng = np.random.default_rng(8)
    alpha = np.exp(rng.normal(0, 1.5, size=(400, 5)))  # sharp and flat, 0.05 to 20
    counts = _draw(alpha, rng.integers(0, 60, size=400), rng)
    n = np.concatenate([counts[:, g].sum(axis=1, keepdims=True).repeat(len(g), axis=1)
                        for g in GROUPS], axis=1)
    rest = np.concatenate([alpha[:, g].sum(axis=1, keepdims=True) - alpha[:, g]
                           for g in GROUPS], axis=1)
    lo = stats.betabinom.ppf(0.05, n, alpha, rest)
    hi = stats.betabinom.ppf(0.95, n, alpha, rest)
    expected = np.where(n > 0, ((counts >= lo) & (counts <= hi)).astype(float), np.nan)
    assert (n == 0).any() and 0.5 < np.nanmean(expected) < 1  # none votes, and misses
    np.testing.assert_array_equal(count_interval_hits(alpha, counts, GROUPS), expected)


def test_the_baseline_recovers_one_dirichlet_from_its_counts() -> None:
    rng = np.random.default_rng(5)
    truth = np.array([3.0, 8.0, 1.0, 5.0, 2.0])
    counts = _draw(np.tile(truth, (4000, 1)), rng.integers(5, 40, size=4000), rng)
    counts[:100, 3:] = 0  # a question nobody was asked: no information, no harm
    np.testing.assert_allclose(fit_concentrations(counts, GROUPS), truth, rtol=0.15)


def test_calibration_widens_overconfident_intervals_and_keeps_fractions() -> None:
    task = make_task("counts", ["a", "b", "c", "d", "e"])
    assert isinstance(task, CountsTask)
    task.schema = None
    task.__post_init__()
    rng = np.random.default_rng(6)
    true_alpha = rng.uniform(1, 8, size=(400, 5))
    counts = np.zeros_like(true_alpha)
    for i in range(400):
        counts[i] = rng.multinomial(30, rng.dirichlet(true_alpha[i]))
    # logits whose concentrations are 5x too confident
    over = np.clip(true_alpha * 5, 1.01, 100.9)
    logits = -np.log(100 / (over - 1) - 1)
    cal = task.fit_calibration(logits, counts)
    assert cal.method == "concentration"
    assert 0.1 < cal.scale[0] < 0.35  # about 1/5
    layer = task.calibrated_output(task.output_layer(), cal)
    calibrated = layer(torch.tensor(logits)).numpy()
    np.testing.assert_allclose(task.fractions(calibrated), task.fractions(over), atol=1e-6)


def _write(path: Path, header: list[str], rows: list[list[object]]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def _images(folder: Path, ids: list[str]) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in ids:
        Image.new("RGB", (16, 16), (10, 20, 30)).save(folder / f"{i}.png")


def _tree_counts(schema, rng: np.random.Generator) -> dict[str, int]:  # type: ignore[no-untyped-def]
    counts: dict[str, int] = {}
    for q in schema.tree_order:
        n = int(rng.integers(2, 40)) if q.parent is None else counts[q.parent]
        counts.update(zip(q.answers, rng.multinomial(n, np.ones(len(q.answers)) / len(q.answers)),
                          strict=True))
    return counts


def test_a_gz_decals_catalogue_is_counts_with_its_totals_and_fractions_left_aside(
        tmp_path: Path) -> None:
    schema = gz_decals_schema()
    rng = np.random.default_rng(7)
    ids = [f"J{i:04d}" for i in range(30)]
    _images(tmp_path / "img", ids)
    header = ["iauname", "ra", "dec", *schema.columns,
              *(f"{q.name}_total-votes" for q in schema.questions),
              *(f"{a}_fraction" for a in schema.columns),
              *(f"{a}_debiased" for a in schema.columns)]
    rows = []
    for i in ids:
        c = _tree_counts(schema, rng)
        totals = [sum(c[a] for a in q.answers) for q in schema.questions]
        rows.append([i, 150.1, 2.2, *(c[a] for a in schema.columns), *totals,
                     *([0.5] * len(schema.columns)), *([0.4] * len(schema.columns))])
    _write(tmp_path / "votes.csv", header, rows)
    data = read_csv_table(tmp_path / "votes.csv", tmp_path / "img")
    assert data.task == "counts" and data.schema.name == "gz_decals_dr5"
    assert data.classes == schema.columns and data.issues == []
    expected = np.array([r[3:3 + len(schema.columns)] for r in rows], dtype=float)
    np.testing.assert_array_equal(data.targets, expected)


def gz2_catalogue(folder: Path, n: int, seed: int) -> tuple[Path, list[list[object]]]:
    """A Galaxy Zoo 2 count table named as Hart et al. (2016) name it (``_count`` columns
    beside weights, fractions, debiased fractions and flags), for ``n`` galaxies with
    images in ``folder/img``: ``(the table, its rows)``."""
    schema = gz2_schema()
    rng = np.random.default_rng(seed)
    ids = [str(587722981741363294 + i) for i in range(n)]
    _images(folder / "img", ids)
    header = ["dr7objid", "total_classifications", "total_votes"]
    for a in schema.columns:
        header += [f"{a}_count", f"{a}_weight", f"{a}_fraction", f"{a}_weighted_fraction",
                   f"{a}_debiased", f"{a}_flag"]
    rows = []
    for i in ids:
        c = _tree_counts(schema, rng)
        row: list[object] = [i, 44, 120]
        for a in schema.columns:
            row += [c[a], c[a] * 0.9, 0.3, 0.3, 0.3, 0]
        rows.append(row)
    _write(folder / "gz2.csv", header, rows)
    return folder / "gz2.csv", rows


def test_a_gz2_hart_catalogue_is_recognised_from_its_count_columns(tmp_path: Path) -> None:
    schema = gz2_schema()
    table, rows = gz2_catalogue(tmp_path, 20, seed=8)
    data = read_csv_table(table, tmp_path / "img")
    assert data.task == "counts" and data.schema.name == "gz2_hart16"
    assert data.classes == schema.columns  # answers, not the "_count" columns
    assert data.targets[0].tolist() == [float(rows[0][3 + 6 * j]) for j in range(37)]


def test_a_table_that_is_neither_counts_nor_fractions_is_refused(tmp_path: Path) -> None:
    ids = [f"g{i}" for i in range(10)]
    _images(tmp_path / "img", ids)
    header = ["id", "smooth-or-featured_smooth", "smooth-or-featured_featured-or-disk",
              "smooth-or-featured_artifact"]
    # 7 of 10 rows hold fractional or negative "counts": neither counts nor fractions,
    # and not a remnant to train on
    rows = [[i, 3, 4, 0] if k < 3 else [i, 2.5, -1, 7] for k, i in enumerate(ids)]
    _write(tmp_path / "bad.csv", header, rows)
    with pytest.raises(LabelError, match=r"10 of 10 rows .*values found: 16 whole, 7 fractional "
                                         r"above 1, 7 negative.*remnant"):
        read_csv_table(tmp_path / "bad.csv", tmp_path / "img")
    with pytest.raises(LabelError, match=r"7 of 10 rows .*counts task.*row 5: out of range"):
        read_csv_table(tmp_path / "bad.csv", tmp_path / "img", task="counts")
    # 2 bad rows of 10: those two are left out, with why
    rows = [[i, 2.5, 1, 0] if k < 2 else [i, 3, 4, 0] for k, i in enumerate(ids)]
    _write(tmp_path / "few.csv", header, rows)
    data = read_csv_table(tmp_path / "few.csv", tmp_path / "img")
    assert len(data) == 8 and [i.kind for i in data.issues] == ["out of range"] * 2
    assert "whole numbers" in data.issues[0].detail


def test_predicted_fractions_obey_the_tree_and_lie_inside_their_intervals() -> None:
    schema = gz_decals_schema()
    task = make_task("counts", schema.columns, schema)
    assert isinstance(task, CountsTask)
    alpha = np.random.default_rng(9).uniform(1, 101, size=(50, len(schema.columns)))
    fractions = task.fractions(alpha)
    lo, hi = task.intervals(alpha)
    assert ((lo <= fractions) & (fractions <= hi)).all()
    for q in schema.questions:
        cols = [schema.columns.index(a) for a in q.answers]
        np.testing.assert_allclose(fractions[:, cols].sum(1), 1.0, atol=1e-12)
    assert schema.tree_errors(task.tree_product(alpha), schema.columns).max() < 1e-12
    row = task.table_values(alpha[:1])[0]
    columns = task.table_columns(None)
    at = columns.index("bar_weak_fraction")
    assert row[at] == pytest.approx(fractions[0, schema.columns.index("bar_weak")])
    assert columns[at + 1:at + 3] == ["bar_weak_lo", "bar_weak_hi"]
