"""Console scripts whose module imports an optional extra at import time (liverseg-train, -eval, ...).

A console script imports its module before any liverseg code runs, so a missing torch
would end in an ImportError traceback. These launchers import the command by name (as
the console-script mechanism itself does) and turn a package of a missing extra into
one line naming the extra to install, exit 2. Once imported, the command runs under
:class:`liverseg.core.cli.Command` as usual (shell completion included).
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from liverseg.core.errors import EXIT_USAGE
from liverseg.core.extras import missing_extra

__all__ = ["eval_main", "import_study_main", "predict_main", "split_main", "train_main"]


def _launch(target: str, extra: str) -> Any:
    module, _, attr = target.partition(":")
    prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else target
    try:
        main = getattr(importlib.import_module(module), attr)
    except ModuleNotFoundError as e:
        message = missing_extra(e, prog, extra)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    return main()


def train_main() -> Any:
    return _launch("liverseg.trainer.cli:train_main", "train")


def eval_main() -> Any:
    return _launch("liverseg.trainer.cli:eval_main", "train")


def predict_main() -> Any:
    return _launch("liverseg.trainer.cli:predict_main", "train")


def split_main() -> Any:
    return _launch("liverseg.trainer.split:main", "study")


def import_study_main() -> Any:
    return _launch("liverseg.trainer.cli:import_study_main", "train")
