"""Training: the recipe (:mod:`~skysort.training.recipe`, ``train(DATA)`` top to bottom), the
one loop (:mod:`~skysort.training.loop`), the two stages (:mod:`~skysort.training.stages`),
checkpoints and distributed training under torchrun."""
