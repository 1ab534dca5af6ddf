"""Labelling images by hand: ``skysort label to_label.csv --out labels.csv`` serves a page
on 127.0.0.1 (:mod:`skysort.labelling.server`) that shows each image ``skysort suggest``
chose, large, with its look-alikes and the model's guess, and writes each answer to an
answer file ``skysort train --labels`` reads (:mod:`skysort.labelling.answers`)."""
