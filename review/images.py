"""Images the review app accepts: JPEG, PNG, or DICOM rendered with its own window; bounded in bytes and pixels.

The model is sent exactly the bytes stored for DPO, so what a reviewer judged is what training sees:
JPEG and 8-bit grey/RGB PNG keep their original bytes; other PNG modes are re-encoded as 8-bit PNG;
DICOM becomes an 8-bit PNG of its first frame after the modality LUT (RescaleSlope/Intercept) and the
file's own VOI window (WindowCenter/WindowWidth, DICOM PS3.3 C.11.2.1.2), because neither a browser
nor swift reads DICOM. Every problem is an ImageRejected with a message meant for the reviewer.
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from medvlm_vocab import MAX_IMAGE_PIXELS  # the gateway's bound: a bigger image would get 413 there

MAX_UPLOAD_BYTES = 20 * 2**20
_DICOM_MAGIC_OFFSET = 128


class ImageRejected(ValueError):
    """An upload the app refuses; str(e) is shown to the reviewer as is."""


@dataclass(frozen=True)
class ReviewImage:
    data: bytes  # the bytes the model is sent and DPO trains on
    suffix: str  # ".jpg" or ".png"
    width: int
    height: int
    source: str  # "jpeg", "png" or "dicom"
    note: str  # how it was read, shown beside the image

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """Min-max scaling to 0-255 (a constant image becomes black)."""
    values = values.astype(np.float64)
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros(values.shape, np.uint8)
    return np.round((values - lo) / (hi - lo) * 255).astype(np.uint8)


def window_to_uint8(values: np.ndarray, centre: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """DICOM VOI windowing (PS3.3 C.11.2.1.2.1/.2) into 0-255.

    LINEAR: x <= c - 0.5 - (w-1)/2 -> 0; x > c - 0.5 + (w-1)/2 -> 255; else ((x - (c-0.5)) / (w-1) + 0.5) * 255.
    LINEAR_EXACT: x <= c - w/2 -> 0; x > c + w/2 -> 255; else ((x - c) / w + 0.5) * 255.
    SIGMOID: 255 / (1 + exp(-4 (x - c) / w)).
    """
    x = values.astype(np.float64)
    function = (function or "LINEAR").upper()
    if function == "SIGMOID":
        y = 255.0 / (1.0 + np.exp(-4.0 * (x - centre) / width))
    elif function == "LINEAR_EXACT":
        if width <= 0:
            raise ImageRejected(f"DICOM: window width {width} must be positive")
        y = np.clip(((x - centre) / width + 0.5) * 255.0, 0, 255)
        y = np.where(x <= centre - width / 2, 0.0, np.where(x > centre + width / 2, 255.0, y))
    else:
        if width < 1:
            raise ImageRejected(f"DICOM: window width {width} must be at least 1")
        low, high = centre - 0.5 - (width - 1) / 2, centre - 0.5 + (width - 1) / 2
        y = ((x - (centre - 0.5)) / max(width - 1, 1e-9) + 0.5) * 255.0
        y = np.where(x <= low, 0.0, np.where(x > high, 255.0, np.clip(y, 0, 255)))
    return np.round(y).astype(np.uint8)


def _first(value: object) -> float:
    """WindowCenter/WindowWidth may hold several windows: the first is the default one."""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = list(value)[0]  # type: ignore[arg-type]
    return float(value)  # type: ignore[arg-type]


def dicom_image(data: bytes, *, max_pixels: int = MAX_IMAGE_PIXELS) -> ReviewImage:
    """The first frame of a DICOM file as an 8-bit PNG, in the file's own window."""
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, pixel_array

    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except (InvalidDicomError, EOFError, ValueError, OSError) as e:
        raise ImageRejected(f"DICOM: the file cannot be read ({e})") from None
    if "PixelData" not in ds or not ds.get("Rows") or not ds.get("Columns"):
        raise ImageRejected("DICOM: the file holds no image (no pixel data)")
    rows, cols = int(ds.Rows), int(ds.Columns)
    if rows * cols > max_pixels:
        raise ImageRejected(f"DICOM: {cols}x{rows} = {rows * cols} pixels, the limit is {max_pixels}")
    try:
        frame = pixel_array(ds, index=0) if int(ds.get("NumberOfFrames") or 1) > 1 else ds.pixel_array
    except Exception as e:  # pydicom raises many types for unsupported or damaged pixel data
        raise ImageRejected(f"DICOM: the pixel data cannot be decoded ({type(e).__name__}: {e})") from None
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    modality = str(ds.get("Modality", "") or "?")
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(frame, ds)
        out, note = _to_uint8(rgb) if rgb.dtype != np.uint8 else rgb, "palette colour"
    elif frame.ndim == 3:  # RGB / YBR (pydicom converts YBR to RGB)
        out, note = (frame if frame.dtype == np.uint8 else _to_uint8(frame)), "colour"
    else:
        values = apply_modality_lut(frame, ds)
        if ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
            centre, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
            function = str(ds.get("VOILUTFunction") or "LINEAR")
            out = window_to_uint8(values, centre, width, function)
            note = f"window centre {centre:g}, width {width:g} (from the file)"
        elif "VOILUTSequence" in ds:
            out, note = _to_uint8(apply_voi_lut(values, ds)), "VOI LUT from the file"
        else:
            out, note = _to_uint8(values), "no window in the file: full range"
        if photometric == "MONOCHROME1":
            out, note = 255 - out, note + ", inverted (MONOCHROME1)"
    height, width_px = out.shape[:2]
    return ReviewImage(_png(out), ".png", width_px, height, "dicom", f"DICOM {modality}, {note}")


def raster_image(data: bytes, *, max_pixels: int = MAX_IMAGE_PIXELS) -> ReviewImage:
    """A JPEG or PNG, checked in full (a truncated file is refused, not half-shown)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt, (width, height), mode = img.format, img.size, img.mode
            if fmt not in ("JPEG", "PNG"):
                raise ImageRejected(f"{fmt} images are not accepted: upload a JPEG, PNG or DICOM file")
            if width * height > max_pixels:
                raise ImageRejected(f"the image has {width}x{height} = {width * height} pixels, "
                                    f"the limit is {max_pixels}")
            img.load()
            if mode in ("L", "RGB"):
                return ReviewImage(data, ".jpg" if fmt == "JPEG" else ".png", width, height, fmt.lower(), fmt)
            array = np.asarray(img)
            if mode.startswith("I") or mode == "F":  # 16/32-bit grey: scale, as a viewer would
                return ReviewImage(_png(_to_uint8(array)), ".png", width, height, fmt.lower(),
                                   f"{fmt} {mode} scaled to 8 bits")
            return ReviewImage(_png(np.asarray(img.convert("RGB"))), ".png", width, height, fmt.lower(),
                               f"{fmt} {mode} converted to RGB")
    except Image.DecompressionBombError:
        raise ImageRejected(f"the image has too many pixels (limit {max_pixels})") from None
    except UnidentifiedImageError:
        raise ImageRejected("this file is not an image: upload a JPEG, PNG or DICOM file") from None
    except (OSError, SyntaxError, ValueError) as e:
        if isinstance(e, ImageRejected):
            raise
        raise ImageRejected(f"the image file is damaged or truncated ({e})") from None


def read_image(data: bytes, *, max_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_IMAGE_PIXELS) -> ReviewImage:
    """Dispatch on content, never on the file name: DICOM by its 'DICM' marker, else JPEG/PNG."""
    if len(data) > max_bytes:
        raise ImageRejected(f"the file has {len(data)} bytes, the limit is {max_bytes}")
    if not data:
        raise ImageRejected("the file is empty")
    if data[_DICOM_MAGIC_OFFSET:_DICOM_MAGIC_OFFSET + 4] == b"DICM":
        return dicom_image(data, max_pixels=max_pixels)
    return raster_image(data, max_pixels=max_pixels)


def read_upload(path: str | Path, *, max_bytes: int = MAX_UPLOAD_BYTES,
                max_pixels: int = MAX_IMAGE_PIXELS) -> ReviewImage:
    """An uploaded file: the size is checked before a byte is read."""
    size = Path(path).stat().st_size
    if size > max_bytes:
        raise ImageRejected(f"the file has {size} bytes, the limit is {max_bytes}")
    return read_image(Path(path).read_bytes(), max_bytes=max_bytes, max_pixels=max_pixels)
