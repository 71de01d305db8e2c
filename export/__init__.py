"""liverseg.export: the whole pipeline as TorchScript and ONNX files, with measured parity.

* :mod:`liverseg.export.common` -- :func:`prepare_export`, the prologue of both exporters
* :mod:`liverseg.export.onnx` -- :func:`export_onnx` (fp32, dynamic N/H/W, contract in metadata_props)
* :mod:`liverseg.export.torchscript` -- :func:`export_torchscript`, :func:`load_torchscript`
* :mod:`liverseg.export.quantize` -- :func:`quantize_int8` (static QDQ), :func:`convert_fp16`
* :mod:`liverseg.export.verify` -- :func:`verify` -> :class:`ParityReport`, tolerance constants
* :mod:`liverseg.export.cli` -- ``liverseg-export``

Submodules are imported on demand so that ``import liverseg.export`` stays cheap.
"""
