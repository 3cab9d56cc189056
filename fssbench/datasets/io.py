"""Reading dataset images and masks, with errors that name the file and the fix.

Every reader raises ``MissingFileError`` when the file is absent and ``DataError`` when it exists
but cannot be used (truncated JPEG, not an image, a colour PNG where a class-index PNG is needed).
The message is one line and is the same line ``fssbench data check`` prints for that file, so a
loader failure in the middle of a run and the check report read alike.

Masks come in two flavours:

* *index masks* (PASCAL ``SegmentationClassAug``, HSNet's COCO PNGs): a pixel's value is its class
  id (palette or grayscale PNG, read without any colour conversion, so palette indices survive).
* *binary masks* (FSS-1000): any grayscale/colour image, converted to luminance and thresholded
  at 128 by the loader (HSNet's rule).

Nothing here changes Pillow's global settings (truncated images stay errors).
"""

from __future__ import annotations

import builtins
import pickle
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from fssbench.errors import DataError, MissingFileError

_DECODE_ERRORS = (OSError, SyntaxError, ValueError, UnidentifiedImageError, Image.DecompressionBombError, EOFError)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _require(path: Path, what: str) -> None:
    if not path.is_file():
        if path.exists():
            raise DataError(f"{what} {path} is not a regular file; replace it with the file from the dataset download")
        raise MissingFileError(
            f"missing {what} {path}: restore it from the dataset download or remove its entries from the split lists"
        )


def _open_loaded(path: Path, what: str) -> Image.Image:
    """Open and fully decode ``path`` (so truncation is detected here, not later)."""
    _require(path, what)
    try:
        img = Image.open(path)
        img.load()
    except _DECODE_ERRORS as exc:
        raise DataError(f"corrupt {what} {path} ({_one_line(exc)}): re-download or re-extract it") from None
    return img


def read_rgb(path: str | Path, what: str = "image") -> np.ndarray:
    """``H x W x 3`` uint8 RGB (grayscale, palette and CMYK JPEGs are converted)."""
    path = Path(path)
    img = _open_loaded(path, what)
    try:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except _DECODE_ERRORS as exc:  # pragma: no cover - exotic modes
        raise DataError(f"corrupt {what} {path} ({_one_line(exc)}): re-download or re-extract it") from None


def image_size(path: str | Path, what: str = "image") -> tuple[int, int]:
    """``(height, width)`` of a fully decoded image (decoding catches truncated files)."""
    path = Path(path)
    img = _open_loaded(path, what)
    return img.size[1], img.size[0]


def read_index_mask(path: str | Path, what: str = "mask") -> np.ndarray:
    """``H x W`` uint8 class-index mask from a palette or grayscale PNG (no colour conversion)."""
    path = Path(path)
    img = _open_loaded(path, what)
    mode = img.mode
    if mode in ("P", "L"):
        return np.asarray(img, dtype=np.uint8)
    if mode == "1":
        return np.asarray(img, dtype=np.uint8)
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        arr = np.asarray(img)
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise DataError(
                f"{what} {path} has values outside 0..255 (16/32-bit PNG with max {int(arr.max())}); "
                f"class-index masks must be 8-bit palette or grayscale PNGs"
            )
        return arr.astype(np.uint8)
    raise DataError(
        f"{what} {path} is a {mode} colour image, not a class-index mask; use the 8-bit palette/grayscale PNGs "
        f"whose pixel values are class ids (for PASCAL: SegmentationClassAug, not rendered colour masks)"
    )


def read_gray_mask(path: str | Path, what: str = "mask") -> np.ndarray:
    """``H x W`` uint8 luminance of any mask image (FSS-1000 masks; threshold it yourself)."""
    path = Path(path)
    img = _open_loaded(path, what)
    try:
        return np.asarray(img.convert("L"), dtype=np.uint8)
    except _DECODE_ERRORS as exc:  # pragma: no cover - exotic modes
        raise DataError(f"corrupt {what} {path} ({_one_line(exc)}): re-download or re-extract it") from None


def value_histogram(mask: np.ndarray) -> np.ndarray:
    """Pixel count of every value 0..255 of a uint8 mask (faster than ``np.unique``)."""
    return np.bincount(mask.ravel(), minlength=256)


def present_values(mask: np.ndarray) -> set[int]:
    """The set of values occurring in a uint8 mask."""
    return {int(v) for v in np.flatnonzero(value_histogram(mask))}


# --- split lists and class files ---------------------------------------------------------------


def read_text_lines(path: str | Path, what: str = "split list") -> list[tuple[int, str]]:
    """Non-empty, stripped lines of a text file as ``(1-based line number, text)``."""
    path = Path(path)
    _require(path, what)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{what} {path} is not UTF-8 text ({_one_line(exc)}); replace it") from None
    except OSError as exc:
        raise DataError(f"cannot read {what} {path} ({_one_line(exc)})") from None
    return [(i, line.strip()) for i, line in enumerate(text.splitlines(), start=1) if line.strip()]


def read_classes_file(path: str | Path) -> dict[int, str]:
    """Parse a ``classes.txt`` (``<id> <name>`` per line, ids 1..N, names may contain spaces; ``#`` comments)."""
    path = Path(path)
    out: dict[int, str] = {}
    for lineno, line in read_text_lines(path, "class list"):
        if line.startswith("#"):
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or not parts[0].isdigit():
            raise DataError(f"{path}:{lineno}: expected '<id> <name>', got '{line}'")
        cid = int(parts[0])
        if cid in out:
            raise DataError(f"{path}:{lineno}: class id {cid} appears twice")
        out[cid] = parts[1].strip()
    if sorted(out) != list(range(1, len(out) + 1)):
        raise DataError(f"{path}: class ids must be 1..N without gaps, got {sorted(out)[:10]}...")
    return out


_PICKLE_ALLOWED = frozenset({"dict", "list", "tuple", "set", "frozenset", "str", "int"})


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves no global except the plain builtin containers; everything else is refused."""

    def find_class(self, module: str, name: str) -> type:
        if module in ("builtins", "__builtin__") and name in _PICKLE_ALLOWED:
            return getattr(builtins, name)
        raise pickle.UnpicklingError(f"refusing to load object {module}.{name}")

    def persistent_load(self, pid: object) -> object:
        raise pickle.UnpicklingError("refusing persistent ids")


def load_plain_pickle(path: str | Path, what: str = "split list") -> object:
    """Load a pickle holding only builtin containers, strings and ints (never arbitrary objects)."""
    path = Path(path)
    _require(path, what)
    try:
        with open(path, "rb") as fh:
            return _RestrictedUnpickler(fh).load()
    except pickle.UnpicklingError as exc:
        raise DataError(
            f"{what} {path} is not a plain pickle of classes and image lists ({_one_line(exc)}); "
            f"use the official HSNet file or rebuild it with `fssbench data splits`"
        ) from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, OSError, MemoryError) as exc:
        raise DataError(
            f"corrupt {what} {path} ({_one_line(exc)}); re-download it or rebuild it with `fssbench data splits`"
        ) from None
