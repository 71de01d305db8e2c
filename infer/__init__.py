"""liverseg.infer: batch inference on ONNX Runtime (``liverseg-infer``), without torch.

* :mod:`liverseg.infer.cli` -- the command line (``liverseg-infer INPUT ...``).
* :mod:`liverseg.infer.runner` -- one run as a short sequence of steps: inputs, model, run folder, schedule, report.
* :mod:`liverseg.infer.schedule` -- the decode -> model -> write threads, same-size batches, ordered completion.
* :mod:`liverseg.infer.resume` -- the run folder, run.json, journal.jsonl and what an earlier run finished.
* :mod:`liverseg.infer.rows` -- one input's outputs and per_image.csv row; per_image.csv in input order.
* :mod:`liverseg.infer.outcome` -- the run report: counts, failures, metrics, timings, exit code, summary.
* :mod:`liverseg.predict.model` -- model lookup, contract, device rules, CUDA I/O binding.
* :mod:`liverseg.infer.inputs` -- input listing and label discovery, output names, decoding, PNG encoding.
* :mod:`liverseg.infer.report` -- report.html from a run folder (``liverseg-report``).
* :mod:`liverseg.infer.shard` -- split runs: which inputs part K of N runs, split.json, the shared folder.
* :mod:`liverseg.infer.merge` -- the whole run's tables and report from a split run's parts (``liverseg-merge``).

Nothing in this package imports torch (tests/test_infer.py checks it).
"""
