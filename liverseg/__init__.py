"""liverseg: liver segmentation in axial CT slices and volumes."""

__version__ = "0.1.0"
