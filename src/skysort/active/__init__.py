"""Active learning: which unlabelled images to label next (``skysort suggest``).

:mod:`~skysort.active.strategies` holds the selection rules in plain NumPy;
:mod:`~skysort.active.suggest` applies a trained run to a pool of images and writes the
batch to label.
"""
