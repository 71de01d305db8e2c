"""liverseg.infer."""
