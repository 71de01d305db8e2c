"""liverseg.infer: batch inference on ONNX Runtime (``liverseg-infer``), without torch.

* :mod:`liverseg.infer.cli` -- the command line (``liverseg-infer INPUT ...``).
* :mod:`liverseg.infer.runner` -- the streamed decode -> model -> encode pipeline, resume, reports.
* :mod:`liverseg.infer.session` -- model lookup, contract, device rules, CUDA I/O binding.
* :mod:`liverseg.infer.io` -- input listing and label discovery, output names, atomic writes, journal.
* :mod:`liverseg.infer.bench` -- end-to-end vs model-only images/s in one process.

Nothing in this package imports torch (tests/test_infer.py checks it).
"""
