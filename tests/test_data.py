"""The data reader: every naming scheme and pixel format in liverseg/data.py's docstring,
bad inputs with messages that name the file (and the CSV row), and the real data layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from liverseg.core.images import (
    DataError,
    Sample,
    check_samples,
    discover,
    group_of,
    partner_csv,
    read_image,
    read_mask,
    read_pair,
)


@pytest.fixture
def img() -> np.ndarray:
    """A 24x32 uint8 gradient with a bright square (distinct values, no symmetry)."""
    a = (np.arange(24)[:, None] * 7 + np.arange(32)[None, :] * 3).astype(np.uint8)
    a[5:12, 8:20] = 220
    return a


@pytest.fixture
def mask() -> np.ndarray:
    m = np.zeros((24, 32), bool)
    m[4:14, 6:22] = True
    return m


def save(path: Path, arr: np.ndarray, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, **kw)
    return path


def save_pair(img_path: Path, mask_path: Path, img: np.ndarray, mask: np.ndarray) -> None:
    save(img_path, img)
    save(mask_path, mask.astype(np.uint8) * 255)


def write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


# ---------------------------------------------------------------- pixels: formats, depths, channels


@pytest.mark.parametrize("ext,kw", [(".png", {}), (".tif", {}), (".tiff", {"compression": "tiff_lzw"}), (".bmp", {})])
def test_lossless_gray_formats_read_exactly(tmp_path, img, ext, kw):
    p = save(tmp_path / f"a{ext}", img, **kw)
    out = read_image(p)
    assert out.dtype == np.uint8 and out.shape == img.shape
    assert np.array_equal(out, img)


@pytest.mark.parametrize("ext", [".jpg", ".jpeg"])
def test_jpeg_reads_close(tmp_path, img, ext):
    p = save(tmp_path / f"a{ext}", img, quality=95)
    out = read_image(p)
    assert out.dtype == np.uint8 and out.shape == img.shape
    assert np.abs(out.astype(int) - img).mean() < 3  # lossy, but the same picture


@pytest.mark.parametrize("ext", [".png", ".tif", ".bmp", ".jpg"])
def test_rgb_with_equal_channels_is_unchanged(tmp_path, img, ext):
    rgb = np.repeat(img[..., None], 3, axis=2)  # the study's PNGs: RGB with R=G=B
    p = save(tmp_path / f"rgb{ext}", rgb)
    out = read_image(p)
    assert out.ndim == 2 and out.shape == img.shape
    if ext == ".jpg":
        assert np.abs(out.astype(int) - img).mean() < 3
    else:
        assert np.array_equal(out, img)


def test_rgb_uses_itu_601_luma(tmp_path):
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 200  # pure red
    rgb[2:, :, 1] = 100
    out = read_image(save(tmp_path / "c.png", rgb))
    # L = R*299/1000 + G*587/1000 + B*114/1000 (Pillow's integer version)
    assert out[0, 0] == round(200 * 0.299)
    assert abs(int(out[3, 3]) - round(200 * 0.299 + 100 * 0.587)) <= 1


def test_rgba_and_palette_images(tmp_path, img):
    rgba = np.dstack([img, img, img, np.full_like(img, 255)])
    assert np.array_equal(read_image(save(tmp_path / "a.png", rgba)), img)
    pal = Image.fromarray(img).convert("P")
    pal.save(tmp_path / "p.png")
    assert np.abs(read_image(tmp_path / "p.png").astype(int) - img).max() <= 8


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_16_bit_is_scaled_to_8_bit(tmp_path, ext):
    a16 = np.array([[0, 257, 32896], [65535, 1000, 12850]], dtype=np.uint16)
    p = tmp_path / f"d{ext}"
    Image.fromarray(a16).save(p)
    with Image.open(p) as im:
        assert im.mode.startswith("I")  # really stored as 16-bit
    out = read_image(p)
    # value / 257, rounded: 0, 1, 128, 255, 3.89 -> 4, 50
    assert out.dtype == np.uint8
    assert out.tolist() == [[0, 1, 128], [255, 4, 50]]


def test_float_image_without_air_is_refused(tmp_path):
    p = tmp_path / "f.tif"
    Image.fromarray(np.ones((4, 4), np.float32)).save(p)
    with pytest.raises(DataError, match="cannot tell what its values are") as e:
        read_image(p)
    assert str(p) in str(e.value)


def _ct_slice(rng) -> np.ndarray:
    """Signed HU: air, fat, liver-like soft tissue and bone."""
    hu = np.full((40, 40), -1000, np.int16)
    hu[5:35, 5:35] = -100
    hu[10:30, 10:30] = rng.integers(40, 160, (20, 20))
    hu[18:22, 18:22] = 700
    return hu


def test_16_bit_hu_slice_gives_its_8_bit_png(tmp_path, rng):
    """HU+1024 in a 16-bit PNG/TIFF and signed HU in a float TIFF read as the PNG sets' clip(HU, 0, 255)."""
    hu = _ct_slice(rng)
    expected = np.clip(hu, 0, 255).astype(np.uint8)
    stored = (hu.astype(np.int32) + 1024).astype(np.uint16)
    for ext in (".png", ".tif"):
        p = tmp_path / f"hu1024{ext}"
        Image.fromarray(stored).save(p)
        assert np.array_equal(read_image(p), expected), ext
    p = tmp_path / "hu.tif"
    Image.fromarray(hu.astype(np.float32)).save(p)
    assert np.array_equal(read_image(p), expected)
    # the model's window, when it is another one
    win = read_image(tmp_path / "hu1024.png", window=(-100.0, 200.0))
    assert int(win[12, 12]) == round((int(hu[12, 12]) + 100) * 255 / 300)
    # the rule can be overridden: read as gray, the same file is value / 257
    assert np.array_equal(
        read_image(tmp_path / "hu1024.png", intensity="gray"), np.rint(stored / 257.0).astype(np.uint8)
    )


def test_dark_16_bit_gray_that_is_not_ct_is_refused_not_blank(tmp_path):
    """A 16-bit image under 4096 whose values make no CT image (all below HU 0) is refused with the reason."""
    p = tmp_path / "dark.png"
    Image.fromarray(np.full((8, 8), 500, np.uint16)).save(p)
    with pytest.raises(DataError, match="blank image") as e:
        read_image(p)
    assert "--intensity" in str(e.value)
    assert read_image(p, intensity="gray").max() == 2  # 500 / 257


# ---------------------------------------------------------------- masks: the binarisation rule


def test_mask_0_255_threshold_at_half_scale(tmp_path):
    m = np.array([[0, 127, 128, 255], [1, 64, 200, 129]], np.uint8)
    out = read_mask(save(tmp_path / "m.png", m))
    # max 255 >= 128: liver where value >= 128
    assert out.dtype == bool
    assert out.tolist() == [[False, False, True, True], [False, False, True, True]]


@pytest.mark.parametrize("labels", [[0, 1], [0, 1, 2]])
def test_label_maps_below_half_count_every_nonzero_pixel(tmp_path, labels):
    m = np.zeros((6, 6), np.uint8)
    for i, v in enumerate(labels):
        m[i] = v  # rows of 0, 1 (and 2 = tumour)
    out = read_mask(save(tmp_path / "lab.png", m))
    assert np.array_equal(out, m > 0)


def test_mask_16_bit(tmp_path):
    m = np.array([[0, 32767, 32768, 65535]], np.uint16)
    out = read_mask(save(tmp_path / "m16.png", m))
    assert out.tolist() == [[False, False, True, True]]
    lab = np.array([[0, 1, 2, 0]], np.uint16)  # a 16-bit label map
    assert read_mask(save(tmp_path / "lab16.png", lab)).tolist() == [[False, True, True, False]]


def test_jpeg_mask_noise_is_binarised_like_the_png(tmp_path, mask):
    m = np.zeros((64, 64), bool)
    m[10:40, 15:50] = True
    save(tmp_path / "m.jpg", m.astype(np.uint8) * 255, quality=75)
    raw = np.asarray(Image.open(tmp_path / "m.jpg").convert("L"))
    assert len(np.unique(raw)) > 2  # JPEG really added grey values at the edge
    out = read_mask(tmp_path / "m.jpg")
    assert (out != m).sum() <= 0.02 * m.size
    assert out[20:30, 25:40].all() and not out[50:, :].any()


def test_rgb_mask(tmp_path, mask):
    rgb = np.repeat((mask.astype(np.uint8) * 255)[..., None], 3, axis=2)
    assert np.array_equal(read_mask(save(tmp_path / "m.png", rgb)), mask)


def test_empty_mask_stays_empty(tmp_path):
    assert not read_mask(save(tmp_path / "z.png", np.zeros((5, 5), np.uint8))).any()


@pytest.mark.parametrize("shape", [(1, 1), (3, 700), (512, 512), (37, 5)])
@pytest.mark.parametrize("deflate", ["zlib-ng", "zlib"])
def test_mask_png_is_a_standard_8_bit_gray_png(tmp_path, monkeypatch, shape, deflate):
    """encode_mask_png writes what Pillow's encoder wrote, pixel for pixel; checksums valid; rows unfiltered."""
    import struct
    import zlib

    import liverseg.core.png as data_mod

    if deflate == "zlib":  # the fallback where zlib-ng has no wheel
        monkeypatch.setattr(data_mod, "_deflate", zlib)
    rng = np.random.default_rng(sum(shape))
    m = np.where(rng.random(shape) < 0.3, 255, 0).astype(np.uint8)
    m[: shape[0] // 2] = 0  # long runs as in a real mask, and a few isolated pixels
    path = tmp_path / "m_pred.png"
    path.write_bytes(data_mod.encode_mask_png(m))
    with Image.open(path) as im:
        im.verify()  # every chunk's CRC
    with Image.open(path) as im:
        assert im.mode == "L" and im.size == (shape[1], shape[0])
        assert np.array_equal(np.asarray(im), m)
    assert np.array_equal(read_mask(path), m > 0)
    raw = path.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n" and raw[12:16] == b"IHDR" and raw.endswith(b"IEND\xaeB`\x82")
    (n,) = struct.unpack(">I", raw[33:37])
    rows = np.frombuffer(zlib.decompress(raw[41 : 41 + n]), np.uint8).reshape(shape[0], shape[1] + 1)
    assert not rows[:, 0].any()  # filter type 0 on every row


@pytest.mark.parametrize("form", ["gray8", "gray16", "rgb"])
@pytest.mark.parametrize("deflate", ["zlib-ng", "zlib"])
def test_pictures_are_standard_pngs_with_their_pixels(tmp_path, monkeypatch, form, deflate):
    """encode_png: 8-bit gray, 16-bit gray (big-endian samples) and RGB open in Pillow as written, CRCs valid."""
    import zlib

    import liverseg.core.png as data_mod

    if deflate == "zlib":
        monkeypatch.setattr(data_mod, "_deflate", zlib)
    rng = np.random.default_rng(3)
    shape = {"gray8": (31, 45), "gray16": (31, 45), "rgb": (31, 45, 3)}[form]
    top = 65536 if form == "gray16" else 256
    pixels: np.ndarray = rng.integers(0, top, shape).astype(np.uint16 if form == "gray16" else np.uint8)
    path = tmp_path / "p.png"
    path.write_bytes(data_mod.encode_png(pixels))
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.mode == {"gray8": "L", "gray16": "I;16", "rgb": "RGB"}[form]
        assert np.array_equal(np.asarray(im).astype(pixels.dtype), pixels)
    if form == "gray16":  # read back by liverseg's own reader as a 16-bit gray image
        assert np.array_equal(read_image(path, intensity="gray"), (pixels / 257).round().astype(np.uint8))


def test_png_encoders_refuse_what_they_cannot_write():
    from liverseg.core.png import encode_mask_png, encode_png

    bad_masks: list[np.ndarray] = [
        np.zeros((4, 4), np.uint16),
        np.zeros((4, 4, 3), np.uint8),
        np.zeros((0, 4), np.uint8),
    ]
    for bad in bad_masks:
        with pytest.raises(ValueError, match="uint8"):
            encode_mask_png(bad)
    bad_pictures: list[np.ndarray] = [
        np.zeros((4, 4), np.float32),
        np.zeros((4, 4, 4), np.uint8),
        np.zeros((4, 0, 3), np.uint8),
    ]
    for bad in bad_pictures:
        with pytest.raises(ValueError, match="uint8"):
            encode_png(bad)


def test_atomic_writes_give_usual_permissions_unique_temporaries_and_no_leftovers(tmp_path):
    """New files get 0666 less the umask (no umask juggling); a failed write leaves neither file nor temporary."""
    import os
    import threading

    from liverseg.core.files import TMP_MARK, atomic_path, write_bytes_atomic

    umask = os.umask(0o022)
    try:
        assert write_bytes_atomic(tmp_path / "a.png", b"abc", fsync=False) == 3
        with atomic_path(tmp_path / "b.onnx") as tmp:
            assert tmp.suffix == ".onnx" and TMP_MARK in tmp.name
            tmp.write_bytes(b"model")
    finally:
        os.umask(umask)
    for name in ("a.png", "b.onnx"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.onnx").read_bytes() == b"model"

    def many(k: int) -> None:
        for i in range(200):
            write_bytes_atomic(tmp_path / "same.bin", f"{k}-{i}".encode(), fsync=False)

    threads = [threading.Thread(target=many, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (tmp_path / "same.bin").read_bytes().decode().endswith("-199")

    with pytest.raises(TypeError):
        write_bytes_atomic(tmp_path / "c.png", "not bytes", fsync=False)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="inside"):
        with atomic_path(tmp_path / "d.pt") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("inside")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.onnx", "same.bin"]


def test_a_full_disk_during_an_atomic_write_is_a_disk_full_error_naming_the_file(tmp_path, monkeypatch):
    import builtins
    import errno

    import liverseg.core.files as io_mod

    class Full:
        def __init__(self, fd, *a, **k):
            self.f = builtins.open(fd, *a, **k)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io_mod, "open", Full, raising=False)
    with pytest.raises(io_mod.DiskFullError, match="m_pred.png: disk full"):
        io_mod.write_bytes_atomic(tmp_path / "m_pred.png", b"x", fsync=False)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- naming: CSV lists


def study_tree(root: Path, img: np.ndarray, mask: np.ndarray, n: int = 3) -> None:
    """The study's layout: data/Images/NNN.png, data/Labels/NNN_mask.png, CSVs in data/."""
    for i in range(n):
        save_pair(
            root / "data" / "Images" / f"{i:03d}.png",
            root / "data" / "Labels" / f"{i:03d}_mask.png",
            np.roll(img, i, axis=1),
            np.roll(mask, i, axis=1),
        )
    rows = [f"data/Images/{i:03d}.png" for i in range(n)]
    write_csv(root / "data" / "test_x.csv", "X", rows)
    write_csv(root / "data" / "test_y.csv", "Y", [f"data/Labels/{i:03d}_mask.png" for i in range(n)])
    write_csv(
        root / "data" / "data_pairs.csv",
        "X,Y",
        [f"data/Images/{i:03d}.png,data/Labels/{i:03d}_mask.png" for i in range(n)],
    )


def test_study_x_csv_with_partner_y_csv(tmp_path, img, mask):
    study_tree(tmp_path, img, mask)
    samples = discover(tmp_path / "data" / "test_x.csv", root=tmp_path)
    assert len(samples) == 3
    assert samples[1].image == tmp_path / "data" / "Images" / "001.png"
    assert samples[1].mask == tmp_path / "data" / "Labels" / "001_mask.png"
    assert samples[1].origin == "test_x.csv row 3"  # header is row 1
    i1, m1 = read_pair(samples[1])
    assert np.array_equal(i1, np.roll(img, 1, axis=1)) and np.array_equal(m1, np.roll(mask, 1, axis=1))
    assert partner_csv(tmp_path / "data" / "test_x.csv") == tmp_path / "data" / "test_y.csv"


def test_pairs_csv(tmp_path, img, mask):
    study_tree(tmp_path, img, mask)
    samples = discover(tmp_path / "data" / "data_pairs.csv", root=tmp_path, need_labels=True)
    assert [s.mask.name for s in samples if s.mask is not None] == ["000_mask.png", "001_mask.png", "002_mask.png"]
    check_samples(samples)


def test_image_only_csv(tmp_path, img):
    save(tmp_path / "a.png", img)
    save(tmp_path / "b.png", img)
    csv = write_csv(tmp_path / "list.csv", "X", ["a.png", "b.png"])
    samples = discover(csv, root=tmp_path)
    assert [s.image.name for s in samples] == ["a.png", "b.png"] and all(s.mask is None for s in samples)
    with pytest.raises(DataError, match="no labels") as e:
        discover(csv, root=tmp_path, need_labels=True)
    assert str(csv) in str(e.value)


def test_x_csv_with_labels_given_explicitly(tmp_path, img, mask):
    study_tree(tmp_path, img, mask)
    other = write_csv(tmp_path / "elsewhere" / "labels.csv", "Y", [f"data/Labels/{i:03d}_mask.png" for i in range(3)])
    x = write_csv(tmp_path / "imgs.csv", "X", [f"data/Images/{i:03d}.png" for i in range(3)])
    samples = discover(x, labels=other, root=tmp_path, need_labels=True)
    assert samples[2].mask == tmp_path / "data" / "Labels" / "002_mask.png"
    # labels given as a folder: matched by stem with the _mask suffix
    samples = discover(x, labels=tmp_path / "data" / "Labels", root=tmp_path, need_labels=True)
    assert samples[0].mask == tmp_path / "data" / "Labels" / "000_mask.png"


def test_relative_paths_data_root_first_then_csv_folder(tmp_path, img, mask, monkeypatch):
    # the same relative name exists under the root and beside the CSV, with different pixels
    root = tmp_path / "root"
    lists = tmp_path / "lists"
    save(root / "s" / "a.png", img)
    save(lists / "s" / "a.png", 255 - img)
    save(lists / "s" / "only_here.png", img)
    csv = write_csv(lists / "x.csv", "X", ["s/a.png", "s/only_here.png"])
    samples = discover(csv, root=root)
    assert samples[0].image == root / "s" / "a.png"  # the data root wins
    assert samples[1].image == lists / "s" / "only_here.png"  # then the CSV's folder
    # default root: the current directory (as the study ran)
    monkeypatch.chdir(root)
    samples = discover(csv)
    assert samples[0].image.resolve() == (root / "s" / "a.png").resolve()
    monkeypatch.chdir(tmp_path)
    samples = discover(csv)
    assert samples[0].image == lists / "s" / "a.png"


def test_absolute_paths_in_a_csv(tmp_path, img, mask):
    save_pair(tmp_path / "i.png", tmp_path / "m.png", img, mask)
    csv = write_csv(tmp_path / "sub" / "pairs.csv", "X,Y", [f"{tmp_path / 'i.png'},{tmp_path / 'm.png'}"])
    (s,) = discover(csv, root=tmp_path / "nowhere")
    assert s.image == tmp_path / "i.png" and s.mask == tmp_path / "m.png"


def test_csv_header_with_spaces_and_windows_line_ends(tmp_path, img, mask):
    save_pair(tmp_path / "i.png", tmp_path / "m.png", img, mask)
    csv = tmp_path / "p.csv"
    csv.write_bytes(b" X , Y \r\ni.png,m.png\r\n")
    (s,) = discover(csv, root=tmp_path)
    assert s.image == tmp_path / "i.png" and s.mask == tmp_path / "m.png"


# ---------------------------------------------------------------- naming: folders


def test_images_and_masks_folders(tmp_path, img, mask):
    for name in ("b", "a", "c"):
        save_pair(tmp_path / "images" / f"{name}.png", tmp_path / "masks" / f"{name}.png", img, mask)
    samples = discover(tmp_path, need_labels=True)
    assert [s.image.name for s in samples] == ["a.png", "b.png", "c.png"]  # sorted
    assert all(s.mask == tmp_path / "masks" / s.image.name for s in samples)
    assert samples[0].origin == "images/"


def test_images_and_labels_folders_with_mask_suffix(tmp_path, img, mask):
    for i in range(2):
        save_pair(tmp_path / "Images" / f"{i:03d}.png", tmp_path / "Labels" / f"{i:03d}_mask.png", img, mask)
    samples = discover(tmp_path, need_labels=True)
    assert [(s.image.name, s.mask.name) for s in samples if s.mask is not None] == [
        ("000.png", "000_mask.png"),
        ("001.png", "001_mask.png"),
    ]


def test_one_folder_with_mask_suffix(tmp_path, img, mask):
    for i in range(3):
        save_pair(tmp_path / f"{i:03d}.png", tmp_path / f"{i:03d}_mask.png", img, mask)
    samples = discover(tmp_path, need_labels=True)
    assert [s.image.name for s in samples] == ["000.png", "001.png", "002.png"]
    assert [s.mask.name for s in samples if s.mask is not None] == ["000_mask.png", "001_mask.png", "002_mask.png"]


def test_one_folder_missing_a_mask(tmp_path, img, mask):
    save_pair(tmp_path / "000.png", tmp_path / "000_mask.png", img, mask)
    save(tmp_path / "001.png", img)
    samples = discover(tmp_path)
    assert samples[1].mask is None
    with pytest.raises(DataError, match="001") as e:
        discover(tmp_path, need_labels=True)
    assert "001_mask" in str(e.value)


def test_plain_folder_is_images_only_recursively_by_extension(tmp_path, img):
    save(tmp_path / "x" / "a.PNG", img)
    save(tmp_path / "x" / "deep" / "b.jpg", img)
    (tmp_path / "x" / "notes.txt").write_text("not an image")
    samples = discover(tmp_path / "x")
    assert sorted(s.image.name for s in samples) == ["a.PNG", "b.jpg"]
    assert all(s.mask is None for s in samples)


def test_mixed_formats_in_a_folder_pair(tmp_path, img, mask):
    save(tmp_path / "images" / "a.jpg", img, quality=95)
    save(tmp_path / "images" / "b.tif", img)
    save(tmp_path / "masks" / "a.png", mask.astype(np.uint8) * 255)
    save(tmp_path / "masks" / "b.bmp", mask.astype(np.uint8) * 255)
    samples = discover(tmp_path, need_labels=True)
    for s in samples:
        i, m = read_pair(s)
        assert i.shape == m.shape == img.shape and np.array_equal(m, mask)


def test_folder_without_masks_when_needed(tmp_path, img):
    save(tmp_path / "images" / "a.png", img)
    with pytest.raises(DataError) as e:
        discover(tmp_path, need_labels=True)
    assert str(tmp_path) in str(e.value)


# ---------------------------------------------------------------- bad inputs


def test_missing_image_names_file_and_csv_row(tmp_path, img, mask):
    study_tree(tmp_path, img, mask)
    (tmp_path / "data" / "Images" / "001.png").unlink()
    samples = discover(tmp_path / "data" / "test_x.csv", root=tmp_path)
    with pytest.raises(DataError) as e:
        check_samples(samples)
    msg = str(e.value)
    assert "001.png" in msg and "not found" in msg and "test_x.csv row 3" in msg


def test_unreadable_corrupt_and_empty_files(tmp_path, img, mask):
    text = tmp_path / "not_image.png"
    text.write_text("hello, I am text")
    with pytest.raises(DataError, match="not a readable image") as e:
        read_image(text)
    assert str(text) in str(e.value)
    good = save(tmp_path / "good.png", img)
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(DataError, match="corrupt or truncated") as e:
        read_image(cut)
    assert str(cut) in str(e.value)
    zero = tmp_path / "zero.png"
    zero.write_bytes(b"")
    with pytest.raises(DataError, match="0 bytes") as e:
        read_mask(zero)
    assert str(zero) in str(e.value) and "mask" in str(e.value)
    with pytest.raises(DataError, match="folder"):
        read_image(tmp_path)


def test_size_mismatch_names_both_files(tmp_path, img, mask):
    save(tmp_path / "i.png", img)
    save(tmp_path / "m.png", np.zeros((10, 12), np.uint8))
    s = Sample(tmp_path / "i.png", tmp_path / "m.png", "pairs.csv row 2")
    with pytest.raises(DataError) as e:
        read_pair(s)
    msg = str(e.value)
    assert "i.png" in msg and "m.png" in msg and "32x24" in msg and "12x10" in msg and "pairs.csv row 2" in msg


def test_read_pair_without_mask(tmp_path, img):
    save(tmp_path / "i.png", img)
    with pytest.raises(DataError, match="no mask"):
        read_pair(Sample(tmp_path / "i.png"))


def test_empty_lists(tmp_path):
    header_only = write_csv(tmp_path / "e_x.csv", "X", [])
    with pytest.raises(DataError, match="empty") as e:
        discover(header_only)
    assert str(header_only) in str(e.value)
    nothing = tmp_path / "nothing.csv"
    nothing.write_text("")
    with pytest.raises(DataError, match="empty") as e:
        discover(nothing)
    assert str(nothing) in str(e.value)
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(DataError, match="no images") as e:
        discover(tmp_path / "empty_dir")
    assert "empty_dir" in str(e.value)


def test_csv_without_x_header_is_read_by_its_first_column_with_a_note(tmp_path, caplog):
    other = write_csv(tmp_path / "other.csv", "path,label", ["a.png,b.png", "c.png,d.png"])
    with caplog.at_level("WARNING"):
        samples = discover(other, root=tmp_path)
    assert [s.image.name for s in samples] == ["a.png", "c.png"]  # the first column, as the study read it
    notes = [r.getMessage() for r in caplog.records]
    assert len(notes) == 1 and str(other) in notes[0] and "'path'" in notes[0]
    caplog.clear()
    bare = tmp_path / "bare.csv"
    bare.write_text("x0.png\nx1.png\n")  # no header at all: the first line is an entry too
    with caplog.at_level("WARNING"):
        assert [s.image.name for s in discover(bare, root=tmp_path)] == ["x0.png", "x1.png"]
    assert "no header" in caplog.records[0].getMessage()
    only_y = write_csv(tmp_path / "t_y.csv", "Y", ["a.png"])
    with pytest.raises(DataError, match="only a Y column"):
        discover(only_y)


def test_y_csv_with_a_different_row_count(tmp_path, img, mask):
    study_tree(tmp_path, img, mask)
    write_csv(tmp_path / "data" / "test_y.csv", "Y", ["data/Labels/000_mask.png", "data/Labels/001_mask.png"])
    with pytest.raises(DataError) as e:
        discover(tmp_path / "data" / "test_x.csv", root=tmp_path)
    msg = str(e.value)
    assert "test_y.csv" in msg and "2 rows" in msg and "3" in msg


def test_y_csv_without_y_header_is_read_by_its_first_column(tmp_path, img, mask, caplog):
    study_tree(tmp_path, img, mask)
    rows = ["data/Labels/000_mask.png", "data/Labels/001_mask.png", "data/Labels/002_mask.png"]
    write_csv(tmp_path / "data" / "test_y.csv", "mask", rows)
    with caplog.at_level("WARNING"):
        samples = discover(tmp_path / "data" / "test_x.csv", root=tmp_path)
    assert [s.mask.name for s in samples if s.mask] == [Path(r).name for r in rows]
    assert any("test_y.csv" in r.getMessage() and "'mask'" in r.getMessage() for r in caplog.records)


def test_empty_cell_names_the_row(tmp_path, img):
    save(tmp_path / "a.png", img)
    csv = write_csv(tmp_path / "p.csv", "X,Y", ["a.png,a.png", "a.png,"])
    with pytest.raises(DataError, match="row 3: column Y is empty") as e:
        discover(csv, root=tmp_path)
    assert str(csv) in str(e.value)


def test_missing_source_and_wrong_kind(tmp_path, img):
    with pytest.raises(DataError, match="not found"):
        discover(tmp_path / "nope")
    with pytest.raises(DataError, match="not found"):
        discover(tmp_path / "nope.csv")
    png = save(tmp_path / "a.png", img)
    with pytest.raises(DataError, match="CSV list or a folder"):
        discover(png)


def test_group_of():
    assert group_of(Path("vol12_34.png")) == "12"
    assert group_of(Path("data/patient-007/slice_3.png")) == "007"
    assert group_of(Path("x/case_5_mask.png")) == "5"
    assert group_of(Path("p9-s1.png"), r"p(\d+)-") == "9"
    with pytest.raises(DataError, match="does not match"):
        group_of(Path("slice_3.png"))


def test_synthetic_study_layout_reads_back(tmp_path):
    from liverseg.apps.synthetic import write_dataset

    info = write_dataset(tmp_path, 6, size=(40, 48), seed=3, layout="study", slices_per_patient=3)
    samples = discover(info["source"], root=tmp_path, need_labels=True)
    assert len(samples) == 6
    i, m = read_pair(samples[0])
    assert i.shape == m.shape == (40, 48)


# ---------------------------------------------------------------- the real data


@pytest.mark.realdata
def test_seed_format_exact_layout(seed_format):
    # the study ran from the folder that holds data/: CSV entries are relative to it
    samples = discover(seed_format / "data" / "test_x.csv", root=seed_format, need_labels=True)
    assert [s.image.name for s in samples] == ["000.png", "001.png"]
    assert [s.mask.name for s in samples if s.mask is not None] == ["000_mask.png", "001_mask.png"]
    for s in samples:
        with Image.open(s.image) as im:
            assert im.mode == "RGB" and im.size == (512, 512)
        i, m = read_pair(s)
        assert i.shape == m.shape == (512, 512) and i.dtype == np.uint8 and m.dtype == bool
        assert 0 < m.mean() < 0.5
        rgb = np.asarray(Image.open(s.image))
        assert np.array_equal(i, rgb[..., 0])  # R=G=B: conversion to gray changes nothing
        assert 90 < np.median(i[m]) < 150  # liver gray level in the study's window
    pairs = discover(seed_format / "data" / "data_pairs.csv", root=seed_format, need_labels=True)
    assert [(s.image, s.mask) for s in pairs] == [(s.image, s.mask) for s in samples]
    folder = discover(seed_format / "data", need_labels=True)
    assert [(s.image, s.mask) for s in folder] == [(s.image, s.mask) for s in samples]


@pytest.mark.realdata
def test_seed_format_without_root_resolves_beside_the_csv_fails_cleanly(seed_format, tmp_path, monkeypatch):
    # from another directory, 'data/Images/000.png' is neither under the cwd nor beside data/test_x.csv
    monkeypatch.chdir(tmp_path)
    samples = discover(seed_format / "data" / "test_x.csv")
    with pytest.raises(DataError, match="not found") as e:
        read_pair(samples[0])
    assert "test_x.csv row 2" in str(e.value)


@pytest.mark.realdata
def test_msd_images_and_masks_folders(msd_dir):
    samples = discover(msd_dir, need_labels=True)
    assert len(samples) == 623
    assert all(s.mask is not None and s.image.stem == s.mask.stem for s in samples)
    for s in samples[:: 623 // 12]:  # a sample of them, all with liver
        i, m = read_pair(s)
        assert i.shape == m.shape == (256, 256)
        assert m.any()


def test_a_windowed_volume_is_refused_only_when_every_slice_is_blank():
    from liverseg.core.intensity import check_windowed

    hu = np.full((4, 8, 8), -2000, np.int16)
    blank = np.zeros((4, 8, 8), np.uint8)
    with pytest.raises(DataError, match="blank image"):
        check_windowed(blank, hu, "hu", (-100.0, 200.0), "vol.nii.gz")
    blank[3, 5, 5] = 7  # one voxel in the last slice: the model sees something
    check_windowed(blank, hu, "hu", (-100.0, 200.0), "vol.nii.gz")
    with pytest.raises(DataError, match="blank image"):
        check_windowed(np.full((8, 8), 255, np.uint8), hu[0], "hu", (-100.0, 200.0), "slice.png")


def _gray_png(pixels: np.ndarray, bits: int = 8, interlaced: bool = False, trns: int | None = None) -> bytes:
    """A grayscale PNG written by hand: ``bits`` per pixel, rows unfiltered, optionally Adam7-interlaced."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    def rows(a: np.ndarray) -> bytes:
        if not a.size:
            return b""
        packed = np.packbits(np.unpackbits(a[..., None], axis=-1)[..., 8 - bits :].reshape(a.shape[0], -1), axis=-1)
        return b"".join(b"\0" + r.tobytes() for r in packed)

    stored = pixels >> (8 - bits)
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    data = b"".join(rows(stored[y::dy, x::dx]) for x, y, dx, dy in passes) if interlaced else rows(stored)
    h, w = pixels.shape
    head = chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bits, 0, 0, 0, int(interlaced)))
    extra = chunk(b"tRNS", struct.pack(">H", trns)) if trns is not None else b""
    return b"\x89PNG\r\n\x1a\n" + head + extra + chunk(b"IDAT", zlib.compress(data)) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "bits, interlaced, trns", [(8, False, None), (8, True, None), (4, False, None), (2, True, None), (8, False, 7)]
)
def test_gray_pngs_decode_straight_into_their_array_with_pillows_pixels(tmp_path, bits, interlaced, trns):
    """8-bit gray PNGs skip Pillow's copy into numpy; every gray PNG layout gives the pixels Pillow gives."""
    import liverseg.core.images as data_mod

    rng = np.random.default_rng(bits)
    pixels = (rng.integers(0, 256, (29, 37)) >> (8 - bits) << (8 - bits)).astype(np.uint8)
    pixels[:10] = 0  # a mask-like run of zeros beside noise
    path = tmp_path / "g.png"
    path.write_bytes(_gray_png(pixels, bits, interlaced, trns))
    with Image.open(path) as im:
        expected = np.asarray(im.convert("L"))
        assert im.mode == "L"
    img, decoded = data_mod._open(path, "image")
    with img:
        assert decoded is not None and np.array_equal(decoded, expected)
    got = read_image(path)
    assert np.array_equal(got, expected) and got.flags.writeable and got.flags.c_contiguous
    got[:] = 1  # the array is the caller's: writing it touches nothing else
    assert np.array_equal(read_image(path), expected)
    assert np.array_equal(read_mask(path), expected >= 128 if expected.max() >= 128 else expected > 0)


def test_a_pillow_that_decodes_elsewhere_still_gives_the_pixels(tmp_path, monkeypatch):
    """If a Pillow version replaced the mapped memory while loading, the reader copies as before."""
    from PIL import ImageFile

    import liverseg.core.images as data_mod

    def fresh_memory(self):
        self.im = Image.core.new(self.mode, self.size)

    monkeypatch.setattr(ImageFile.ImageFile, "load_prepare", fresh_memory)
    pixels = np.arange(64 * 48, dtype=np.uint32).reshape(48, 64).astype(np.uint8)
    path = tmp_path / "g.png"
    Image.fromarray(pixels).save(path)
    img, decoded = data_mod._open(path, "image")
    with img:
        assert decoded is None
    assert np.array_equal(read_image(path), pixels)
