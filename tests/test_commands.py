"""The commands read like their peers': ``--version`` on each, ``-o/--out`` as the one output spelling,
``liverseg-infer --help`` in sections, and what it says about labels and DICOM series holds.

Every console script of pyproject.toml is loaded as the click command it runs (the launchers'
targets for the commands of an extra), so a new command is covered without a line here.
"""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import click
import numpy as np
import pytest
import tomllib
from click.testing import CliRunner
from PIL import Image

import liverseg
from liverseg.infer.cli import SECTIONS
from liverseg.infer.cli import main as infer_main
from liverseg.infer.inputs import list_inputs

ROOT = Path(__file__).resolve().parents[1]
# liverseg.launch's functions -> the command each imports (they are one-line wrappers)
LAUNCHED = {
    "train_main": "liverseg.trainer.cli:train_main",
    "eval_main": "liverseg.trainer.cli:eval_main",
    "predict_main": "liverseg.trainer.cli:predict_main",
    "import_study_main": "liverseg.trainer.cli:import_study_main",
    "split_main": "liverseg.trainer.split:main",
}
# The old spellings of -o/--out that still work (hidden from --help).
OLD_SPELLINGS = {"--output", "--out-dir"}


def _scripts() -> dict[str, click.Command]:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    out = {}
    for name, target in scripts.items():
        module, attr = target.split(":")
        if module == "liverseg.launch":
            module, attr = LAUNCHED[attr].split(":")
        out[name] = getattr(importlib.import_module(module), attr)
    return out


def _leaves(name: str, cmd: click.Command) -> list[tuple[str, click.Command]]:
    if isinstance(cmd, click.Group):
        return [(f"{name} {k}", c) for k, c in cmd.commands.items()]
    return [(name, cmd)]


SCRIPTS = _scripts()


def test_the_launchers_table_matches_liverseg_launch():
    import inspect

    import liverseg.launch as launch

    for attr, target in LAUNCHED.items():
        assert f'"{target}"' in inspect.getsource(getattr(launch, attr)), attr


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_every_command_has_version(name):
    r = CliRunner().invoke(SCRIPTS[name], ["--version"], prog_name=name)
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == f"{name} (liverseg) {liverseg.__version__}"


@pytest.mark.parametrize(
    ("name", "cmd"), [leaf for name, cmd in sorted(SCRIPTS.items()) for leaf in _leaves(name, cmd)]
)
def test_an_output_option_is_spelled_o_out_and_old_spellings_are_hidden(name, cmd):
    ctx = click.Context(cmd, info_name=name)
    outputs = [
        p
        for p in cmd.params
        if isinstance(p, click.Option) and {"-o", "--out", "--output", "--out-dir"} & set(p.opts + p.secondary_opts)
    ]
    if name in ("liverseg-train", "liverseg-eval", "liverseg-report", "liverseg-merge"):
        # train: the config's run folder; eval: --json FILE; report, merge: the run folder is the argument
        assert not outputs, name
        return
    assert len(outputs) == 1, f"{name}: {[p.opts for p in outputs]}"
    opt = outputs[0]
    assert opt.opts[:2] == ["-o", "--out"], f"{name}: {opt.opts}"
    shown = opt.get_help_record(ctx)
    assert shown is not None and shown[0].startswith("-o, --out ")
    assert not OLD_SPELLINGS & set(re.findall(r"--[\w-]+", cmd.get_help(ctx))), f"{name} shows an old spelling"


def test_an_option_is_spelled_alike_in_every_command():
    """The same long option has the same short form everywhere (``-o/--out``, ``-m/--model``, ...)."""
    spellings: dict[str, dict[tuple[str, ...], list[str]]] = {}
    for name, cmd in SCRIPTS.items():
        for leaf, c in _leaves(name, cmd):
            ctx = click.Context(c, info_name=leaf)
            for p in c.params:
                record = p.get_help_record(ctx) if isinstance(p, click.Option) else None
                if record is None:
                    continue
                shown = tuple(sorted(re.findall(r"(?<![\w-])--?[\w][\w-]*", record[0].split(" / ")[0])))
                longs = [o for o in shown if o.startswith("--")]
                spellings.setdefault(longs[0] if longs else shown[0], {}).setdefault(shown, []).append(leaf)
    differ = {k: v for k, v in spellings.items() if len(v) > 1}
    assert not differ, f"spelled differently across commands: {differ}"


@pytest.mark.parametrize(("name", "old"), [("liverseg-predict", "--output"), ("liverseg-split", "--out-dir")])
def test_an_old_spelling_still_works(name, old):
    cmd = SCRIPTS[name]
    ctx = cmd.make_context(name, ["x", old, "somewhere"], resilient_parsing=True)
    assert any(v == Path("somewhere") for v in ctx.params.values()), ctx.params


def test_infer_help_is_in_sections_with_the_common_options_first():
    text = CliRunner().invoke(infer_main, ["--help"], prog_name="liverseg-infer").stdout
    titles = [t for t, _ in SECTIONS]
    assert titles == ["Inputs", "Model and engine", "Outputs", "Run control"]
    heads = [ln[:-1] for ln in text.splitlines() if ln and not ln.startswith(" ") and ln.endswith(":")]
    assert heads == titles, f"every option of liverseg-infer belongs in a section of infer/cli.py SECTIONS: {heads}"
    body = {t: text.split(f"\n{t}:\n")[1].split("\n\n")[0] for t in titles}
    first = {t: re.match(r"\s+(-\w, )?(--[\w-]+)", body[t]).group(2) for t in titles}  # type: ignore[union-attr]
    assert first == {"Inputs": "--labels", "Model and engine": "--model", "Outputs": "--out", "Run control": "--resume"}
    assert "-o, --out" in body["Outputs"] and "--version" in body["Run control"] and "--help" in body["Run control"]


# ---------------------------------------------------------------- labels found as --help says


def _png(path: Path, value: int = 90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), value, np.uint8)).save(path)
    return path


@pytest.mark.parametrize("given", ["parent", "images folder"])
@pytest.mark.parametrize(("images", "masks", "suffix"), [("images", "masks", ""), ("Images", "Labels", "_mask")])
def test_labels_are_found_beside_the_images_whichever_folder_is_given(tmp_path, images, masks, suffix, given):
    for stem in ("000", "001"):
        _png(tmp_path / "data" / images / f"{stem}.png")
        _png(tmp_path / "data" / masks / f"{stem}{suffix}.png", 255)
    source = tmp_path / "data" if given == "parent" else tmp_path / "data" / images
    items = list_inputs(source)
    assert [(Path(it.image).name, Path(it.label or "").name) for it in items] == [
        ("000.png", f"000{suffix}.png"),
        ("001.png", f"001{suffix}.png"),
    ]
    assert f"{images}/ -> {masks}/" in " ".join(infer_main.get_help(click.Context(infer_main)).split())


# ---------------------------------------------------------------- DICOM folders of several series


@pytest.fixture(scope="module")
def two_series(tmp_path_factory) -> dict[str, Path]:
    """A folder holding two CT series, and a tiny exported model."""
    pytest.importorskip("pydicom")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from test_volumes import _model, _phantom

    from liverseg.apps.dicom_synth import write_series

    d = tmp_path_factory.mktemp("series")
    hu, _ = _phantom()
    stack = np.ascontiguousarray(np.transpose(hu, (2, 1, 0)))
    write_series(d / "study" / "a", stack, spacing=(2.5, 0.8, 0.8), series_uid="1.2.826.0.1.1")
    write_series(d / "study" / "b", stack[:6], spacing=(2.5, 0.8, 0.8), series_uid="1.2.826.0.1.2")
    return {"folder": d / "study", "model": _model(d, None)}


def _infer(args: list[str]) -> click.testing.Result:
    return CliRunner().invoke(infer_main, [*args, "--no-progress", "--no-report", "--no-anatomy", "--device", "cpu"])


def test_a_folder_of_several_series_names_series_on_stderr(two_series, tmp_path):
    r = _infer([str(two_series["folder"]), "--model", str(two_series["model"]), "-o", str(tmp_path / "o")])
    assert r.exit_code == 1
    said = [ln for ln in r.stderr.splitlines() if "2 image series" in ln]
    assert len(said) == 1 and "--series UID" in said[0] and "1.2.826.0.1.2" in said[0], r.stderr
    assert "pass series_uid" not in r.stderr + r.stdout


def test_the_mask_of_a_chosen_series_is_named_after_the_series(two_series, tmp_path):
    out = tmp_path / "o"
    uid = "1.2.826.0.1.2"
    r = _infer([str(two_series["folder"]), "--series", uid, "--model", str(two_series["model"]), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["1.2.826.0.1.2.nii.gz"]
