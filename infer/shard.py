"""Split runs: ``liverseg-infer --num-parts N --part-id K`` runs a deterministic share of the inputs.

The share (:func:`select_part`) is by sorted output key, never by listing order or a
hash: the inputs are listed as a whole run lists them (so keys and indices are the
whole run's), sorted by :attr:`~liverseg.infer.inputs.Item.key` (unique, and the same on
every machine that lists the same inputs), and cut into N contiguous blocks of
``n // N`` or ``n // N + 1`` inputs; part K takes block K. Neighbouring keys (the
slices of one case) stay in one part.

All parts of one split run write into one ``--out``::

    OUT/split.json                       what the split is: inputs, model, contract, settings, N
    OUT/.liverseg-run.lock               held shared by every running part
    OUT/masks/, overlays/, ...           the outputs, shared: keys are unique, no two parts write one file
    OUT/parts/part-K-of-N/               part K's run.json, journal.jsonl, per_image.csv, summary.json
    OUT/parts/part-K-of-N/.liverseg-run.lock   held by part K alone

The first part to start writes ``split.json``; every other part must match it, so a
part of another split (other model, contract, inputs, settings or N) is refused, as
is a whole run into a split folder and a part into a whole run's folder. A second
process for the same part meets its part lock. ``--resume`` works per part, from the
part's own journal. :mod:`liverseg.infer.merge` checks the parts and writes the
whole run's tables and report.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from liverseg.core.errors import UsageError
from liverseg.core.files import TMP_MARK
from liverseg.infer.inputs import RUN_STATE, Item

PARTS_DIR = "parts"
SPLIT_STATE = "split.json"
SPLIT_FORMAT = "liverseg-infer-split"
# split.json fields every part (and liverseg-merge) must agree on; the paths are said, not compared
SPLIT_CHECKED = ("num_parts", "inputs_sha256", "n_inputs", "model_sha256", "contract_sha256", "settings")


def check_part(num_parts: int, part_id: int | None) -> int:
    """The part id for ``--num-parts``/``--part-id``; :class:`UsageError` for a pair that makes no split.

    :class:`liverseg.infer.runner.Options` calls it when it is built: the one check of the pair."""
    if num_parts < 1:
        raise UsageError(f"--num-parts must be >= 1, got {num_parts}")
    if num_parts == 1:
        if part_id not in (None, 0):
            raise UsageError(f"--part-id {part_id} without --num-parts (parts are 0..N-1)")
        return 0
    if part_id is None:
        raise UsageError(f"--num-parts {num_parts} needs --part-id K (0..{num_parts - 1})")
    if not 0 <= part_id < num_parts:
        raise UsageError(f"--part-id must be in 0..{num_parts - 1} for --num-parts {num_parts}, got {part_id}")
    return part_id


def part_name(part_id: int, num_parts: int) -> str:
    return f"part-{part_id}-of-{num_parts}"


def part_dir(out: Path, part_id: int, num_parts: int) -> Path:
    """``OUT/parts/part-K-of-N``: where part K keeps its run.json, journal and tables."""
    return Path(out) / PARTS_DIR / part_name(part_id, num_parts)


def part_bounds(n: int, num_parts: int, part_id: int) -> tuple[int, int]:
    """Positions ``[lo, hi)`` in key order of part ``part_id``'s block."""
    return part_id * n // num_parts, (part_id + 1) * n // num_parts


def select_part(items: list[Item], num_parts: int, part_id: int) -> list[Item]:
    """Part ``part_id``'s inputs (rule in the module docstring), in the whole run's input order."""
    by_key = sorted(items, key=lambda it: it.key)
    lo, hi = part_bounds(len(by_key), num_parts, part_id)
    return sorted(by_key[lo:hi], key=lambda it: it.index)


def contract_sha256(contract: dict[str, Any]) -> str:
    """SHA-256 of a contract's canonical JSON (key order and spacing do not count)."""
    return hashlib.sha256(json.dumps(contract, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return [k for k in SPLIT_CHECKED if a.get(k) != b.get(k)]


def claim_split(out: Path, record: dict[str, Any]) -> None:
    """Write ``OUT/split.json`` (the first part) or check that this part belongs to the split recorded there.

    Refuses a folder that holds a whole run. Call with the folder's shared lock held.
    The file is made whole under a temporary name and linked into place, which fails
    when it exists: of two parts starting together exactly one writes it.
    """
    out = Path(out)
    if (out / RUN_STATE).exists():
        raise UsageError(
            f"{out} holds a whole (unsplit) run; a part of a split run needs a folder of its own (choose another --out)"
        )
    record = {"format": SPLIT_FORMAT, **record}
    path = out / SPLIT_STATE
    fd, name = tempfile.mkstemp(prefix=f".split{TMP_MARK}", suffix=".json", dir=out)  # unique across hosts too
    tmp = Path(name)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(json.dumps(record, indent=2))
    try:
        os.link(tmp, path)
        return
    except FileExistsError:
        pass
    except OSError:  # a file system without hard links: create it exclusively, then fill it
        try:
            with open(path, "x", encoding="utf-8") as f:
                f.write(json.dumps(record, indent=2))
            return
        except FileExistsError:
            pass
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    there = read_split(out)
    diff = _differences(record, there)
    if diff:
        said = ", ".join(f"{k} {there.get(k)!r} there, {record.get(k)!r} here" for k in diff if k != "settings")
        if "settings" in diff:
            s1, s2 = there.get("settings") or {}, record["settings"]
            said = ", ".join(
                [said] * bool(said) + [f"{k} {s1.get(k)!r} there, {s2.get(k)!r} here" for k in s2 if s1.get(k) != s2[k]]
            )
        raise UsageError(
            f"{out} holds another split run ({said}); every part of one split runs the same model, contract, "
            "inputs, settings and --num-parts (choose another --out)"
        )


def read_split(out: Path) -> dict[str, Any]:
    """``OUT/split.json``; :class:`UsageError` when missing or unreadable."""
    path = Path(out) / SPLIT_STATE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"{out}: no {SPLIT_STATE}; not the folder of a split run (--num-parts)") from None
    except (OSError, ValueError) as e:
        raise UsageError(f"{path}: unreadable ({e})") from None
    if not isinstance(data, dict) or data.get("format") != SPLIT_FORMAT:
        raise UsageError(f"{path}: not a liverseg split record")
    return data


def refuse_split_folder(out: Path) -> None:
    """A whole run may not write into the folder of a split run."""
    if (Path(out) / SPLIT_STATE).exists():
        raise UsageError(
            f"{out} holds the parts of a split run ({SPLIT_STATE}); pass its --num-parts and --part-id, "
            "or choose another --out"
        )
