"""liverseg.export."""
