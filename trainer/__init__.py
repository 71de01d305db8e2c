"""liverseg.trainer."""
