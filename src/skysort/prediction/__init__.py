"""Labelling new images with a trained run: the predictor, the writers of CSV and Parquet
rows, and the Ray Data engine for a cluster."""
