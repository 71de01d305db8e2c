"""The foundation every other layer builds on: errors, file and batching helpers, data reading,
preprocessing, metrics, the model contract, the inference-engine factory, overlays, charts and HTML.

Nothing here imports from ``liverseg.models`` or above (``tests/test_layers.py``).
"""
