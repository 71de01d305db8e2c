"""``python -m liverseg.trainer CONFIG`` is ``liverseg-train CONFIG``: what torchrun starts in every process.

``torchrun --nproc-per-node N -m liverseg.trainer CONFIG.json`` trains with
DistributedDataParallel (:mod:`liverseg.trainer.distributed`).
"""

from liverseg.trainer.cli import train_main

if __name__ == "__main__":
    train_main(prog_name="liverseg-train")
