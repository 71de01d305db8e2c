"""The predictor: where a model is opened, and the one path from an input's pixels to its mask.

:mod:`liverseg.predict.model` opens a model (resolve -> contract -> engine choice -> session);
:mod:`liverseg.predict.predictor` takes a slice or a volume through window -> resample ->
model -> back to the input's grid -> threshold -> cleanup -> quality flags. The Python API
(:mod:`liverseg.api`) is a thin layer over it; ``liverseg-infer`` (:mod:`liverseg.infer`)
schedules and writes around it; the evaluation and benchmarks call the same code.
Nothing here imports torch, or anything of the command's modules.
"""
