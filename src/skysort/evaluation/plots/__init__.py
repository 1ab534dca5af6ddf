"""Every picture skysort draws (matplotlib), drawn from files, never from live objects.

* :mod:`~skysort.evaluation.plots.run`: the run's PNGs (training curves, confusion matrix,
  reliability diagram, risk-coverage curve), embedded in its report too;
* :mod:`~skysort.evaluation.plots.scores`: the report's ROC and precision-recall curves and
  its vote-fraction plots;
* :mod:`~skysort.evaluation.plots.data`: the inspect page's plots of the data (and the
  histogram of vote totals the report shares);
* :mod:`~skysort.evaluation.plots.figures`: what they share (the Agg backend, saving).

Each ``plot_*`` takes what it draws and a file (a path or a file object: see
:func:`skysort.evaluation.render.figure_uri`), and returns the file, or None when there is
nothing to draw. This package only re-exports them; its modules never import it.
"""

from skysort.evaluation.plots.data import (
    plot_class_counts,
    plot_embedding_map,
    plot_image_sizes,
    plot_vote_agreement,
    plot_vote_totals,
    vote_histogram,
)
from skysort.evaluation.plots.run import (
    plot_confusion,
    plot_history,
    plot_reliability,
    plot_risk_coverage,
    plot_scores,
)
from skysort.evaluation.plots.scores import (
    plot_fraction_agreement,
    plot_fraction_rmse,
    plot_fraction_scatter,
    plot_roc_pr,
)

__all__ = ["plot_class_counts", "plot_confusion", "plot_embedding_map", "plot_fraction_agreement",
           "plot_fraction_rmse", "plot_fraction_scatter", "plot_history", "plot_image_sizes",
           "plot_reliability", "plot_risk_coverage", "plot_roc_pr", "plot_scores",
           "plot_vote_agreement", "plot_vote_totals", "vote_histogram"]
