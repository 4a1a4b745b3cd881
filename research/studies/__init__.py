"""Studies: one-off figures (speedups on the same run, accuracy per budget) printed as tables."""
