"""Safe image decoding to RGB uint8, and encoding of modified images.

MedTrinity mixes JPEG and PNG in many modes (L, P, RGBA, CMYK, 16-bit), with truncated and
corrupt files and the odd huge slide. Every usable image must reach the ROI detector as RGB
uint8, and every unusable one must become a counted reason (BadImage.reason), never a crash.
The common case, an 8-bit RGB or grey JPEG, is decoded (and a modified one re-encoded) by
libjpeg-turbo through simplejpeg, ~10% cheaper than through OpenCV; other 8-bit formats by
OpenCV straight into RGB; everything else through PIL.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import cv2
import numpy as np
import simplejpeg
from PIL import Image

DEFAULT_MAX_PIXELS = 50_000_000
JPEG_QUALITY = 95

FORMAT_EXT = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "BMP": "bmp", "TIFF": "tif",
              "WEBP": "webp", "GIF": "gif", "JPEG2000": "jp2"}
LOSSLESS = frozenset({"PNG", "BMP", "TIFF", "GIF"})
_CV2_FORMATS = frozenset({"JPEG", "MPO", "PNG", "BMP", "WEBP", "TIFF"})
_HIGH_DEPTH = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
_EXIF_ORIENTATION = 0x0112
_CV2_FLAGS = cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


class BadImage(Exception):
    """An image that cannot be used; `reason` is the key it is counted under in the report."""

    def __init__(self, reason: str, detail: str = "", size: tuple[int, int] | None = None) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.size = size


@dataclass(frozen=True)
class Decoded:
    """An image as RGB uint8 HxWx3 (its own writable array), with what is needed to decide whether
    to re-encode it.

    change: why the pixels differ from what a plain 8-bit RGB reader sees in the stored file
    ("mode:L", "mode:I;16", "exif_orientation", ...), or None when they are the same.
    """
    rgb: np.ndarray
    format: str
    ext: str
    change: str | None

    @property
    def lossless(self) -> bool:
        return self.format in LOSSLESS


def jpeg_complete(data: bytes) -> bool:
    """True when the last scan of a JPEG is followed by its end-of-image marker.

    libjpeg pads a truncated JPEG with grey and only warns, so truncation has to be checked on
    the bytes. Inside entropy-coded data 0xFF is always followed by 0x00 or a restart marker, so
    FFD9 after the last FFDA (start of scan) can only be the real end; an EXIF thumbnail's own
    FFD9 lies before the main scan and does not count.
    """
    return data.rfind(b"\xff\xd9") > data.rfind(b"\xff\xda") > 0


def scale_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Map a high-bit-depth single-channel image onto 0..255 by its own min..max.

    Medical 16-bit images use 10-16 bits of range: clipping to 255 turns them white and a fixed
    >>8 shift turns 12-bit data nearly black, so the data range is stretched instead.
    """
    a = np.nan_to_num(arr.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        return np.zeros(a.shape, np.uint8)
    return cv2.convertScaleAbs(a, alpha=255.0 / (hi - lo), beta=-lo * 255.0 / (hi - lo))


def pil_to_rgb(im: Image.Image) -> np.ndarray:
    """Any PIL mode to RGB uint8; transparent pixels are composited over black."""
    mode = im.mode
    if mode in _HIGH_DEPTH:
        gray = scale_to_uint8(np.asarray(im))
        return cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in im.info):
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float32)
        rgb = rgba[..., :3] * (rgba[..., 3:4] / 255.0)
        return np.ascontiguousarray(np.rint(rgb).astype(np.uint8))
    return np.array(im.convert("RGB"))  # a writable copy: inpainting works on it in place


def _orient(rgb: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (2..8) so pixels match what a viewer shows."""
    ops = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
           5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, -1),
           7: lambda a: np.rot90(a, 1)[::-1], 8: lambda a: np.rot90(a, 1)}
    return np.ascontiguousarray(ops[orientation](rgb)) if orientation in ops else rgb


def decode(data: bytes | None, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Decoded:
    """Decode image bytes to RGB uint8, or raise BadImage with the reason.

    The header is read first (no pixels), so an oversized image is refused before any large
    allocation (decompression-bomb guard).
    """
    if not data:
        raise BadImage("missing_image", "no image bytes")
    head = read_header(data)
    fmt, mode, (w, h) = head.format, head.mode, head.size
    if w * h > max_pixels:
        raise BadImage("too_large", f"{w}x{h} > {max_pixels} pixels", (w, h))
    if w < 1 or h < 1:
        raise BadImage("corrupt_image", f"size {w}x{h}", (w, h))
    if fmt in ("JPEG", "MPO") and not jpeg_complete(data):
        raise BadImage("truncated_image", "no end-of-image marker after the last scan", (w, h))
    rgb = None
    if fmt in ("JPEG", "MPO") and mode in ("RGB", "L"):
        try:  # EXIF orientation is not applied here either: see _orient below
            rgb = simplejpeg.decode_jpeg(data, colorspace="RGB")
        except ValueError:  # corrupt: PIL below names the reason
            rgb = None
    elif fmt in _CV2_FORMATS and mode in ("RGB", "L"):
        rgb = cv2.imdecode(np.frombuffer(data, np.uint8), _CV2_FLAGS)
    if rgb is not None and rgb.shape[:2] != (h, w):
        rgb = None
    if rgb is None:
        rgb = _decode_with_pil(data, head.image, (w, h))
    changes = [] if mode == "RGB" else [f"mode:{mode}"]
    if head.orientation != 1:
        rgb = _orient(rgb, head.orientation)
        changes.append("exif_orientation")
    return Decoded(rgb, fmt, FORMAT_EXT.get(fmt, "png"), "+".join(changes) or None)


@dataclass(frozen=True)
class Header:
    """What decode needs before any pixel: format, PIL mode, (width, height), EXIF orientation,
    and the PIL image when PIL read it (None on the plain-JPEG fast path)."""
    format: str
    mode: str
    size: tuple[int, int]
    orientation: int = 1
    image: Image.Image | None = None


def read_header(data: bytes) -> Header:
    """The header of any image; raises BadImage("corrupt_image") when nothing can read it.

    A plain 8-bit JPEG (no EXIF or multi-picture segment) is read by jpeg_frame in a few
    microseconds; everything else goes through PIL, whose Image.open costs ~0.2 ms.
    """
    frame = jpeg_frame(data)
    if frame is not None:
        w, h, components = frame
        return Header("JPEG", "RGB" if components == 3 else "L", (w, h))
    try:
        im = _open_header(data)
        fmt = im.format or ""
        orientation = int(im.getexif().get(_EXIF_ORIENTATION, 1)) if fmt in ("JPEG", "MPO") else 1
        return Header(fmt, im.mode, im.size, orientation, im)
    except Exception as e:  # PIL raises many types on garbage; all mean the same here
        raise BadImage("corrupt_image", f"{type(e).__name__}: {e}") from None


def jpeg_frame(data: bytes) -> tuple[int, int, int] | None:
    """(width, height, components) from the frame header of an 8-bit, 1- or 3-component JPEG
    whose segments before it carry no EXIF (orientation) or multi-picture data; None for
    anything else, which read_header leaves to PIL."""
    if not data.startswith(b"\xff\xd8"):
        return None
    pos, end = 2, len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        if marker in _SOF_MARKERS:
            if pos + 10 > end or length < 8:
                return None
            precision, h, w, components = data[pos + 4], *_u16x2(data, pos + 5), data[pos + 9]
            return (w, h, components) if precision == 8 and components in (1, 3) else None
        if marker in (0xE1, 0xE2, 0xDA) or length < 2:
            return None
        pos += 2 + length
    return None


def _u16x2(data: bytes, pos: int) -> tuple[int, int]:
    return int.from_bytes(data[pos:pos + 2], "big"), int.from_bytes(data[pos + 2:pos + 4], "big")


def _open_header(data: bytes) -> Image.Image:
    """Image.open with PIL's own bomb check off: ours runs on the size with the caller's limit."""
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def _decode_with_pil(data: bytes, im: Image.Image | None, size: tuple[int, int]) -> np.ndarray:
    """The slow, general path: every mode PIL knows; truncation raises instead of padding. `im`:
    the image PIL opened for the header, if it did."""
    try:
        im = _open_header(data) if im is None else im
        im.load()
        return pil_to_rgb(im)
    except OSError as e:
        reason = "truncated_image" if "truncat" in str(e).lower() else "corrupt_image"
        raise BadImage(reason, str(e), size) from None
    except Exception as e:
        raise BadImage("corrupt_image", f"{type(e).__name__}: {e}", size) from None


def decolour_near(rgb: np.ndarray, mask: np.ndarray, *, halo: int = 8, ring: int = 6, tol: int = 12,
                  share: float = 0.05, in_place: bool = False) -> np.ndarray:
    """Set the pixels within `halo` px of `mask` to their luma where the tissue around is grey
    (in a copy; in_place: in rgb itself). Returns rgb itself when nothing changes.

    JPEG spreads a green stroke's colour several pixels beyond the stroke (4:2:0 chroma), so after
    the stroke is painted out a grey scan keeps a faintly tinted frame that still marks the ROI.
    Where the `ring` px band outside the halo is grey (at most `share` of its pixels differ by
    more than `tol` between channels), the halo is made grey too; colour images are left alone.
    """
    h, w = mask.shape
    x, y, bw, bh = cv2.boundingRect(mask.view(np.uint8))
    if not bw:
        return rgb
    m = halo + ring
    y0, y1, x0, x1 = max(0, y - m), min(h, y + bh + m), max(0, x - m), min(w, x + bw + m)
    crop, sub = rgb[y0:y1, x0:x1], mask[y0:y1, x0:x1].view(np.uint8)
    near = cv2.dilate(sub, np.ones((2 * halo + 1, 2 * halo + 1), np.uint8))
    around = cv2.subtract(cv2.dilate(near, np.ones((2 * ring + 1, 2 * ring + 1), np.uint8)), near)
    r, g, b = cv2.split(crop)
    chroma = cv2.subtract(cv2.max(cv2.max(r, g), b), cv2.min(cv2.min(r, g), b))
    n_around = cv2.countNonZero(around)
    coloured = cv2.countNonZero(cv2.bitwise_and(cv2.threshold(chroma, tol, 1, cv2.THRESH_BINARY)[1], around))
    if not n_around or coloured > share * n_around:
        return rgb
    out = rgb if in_place else rgb.copy()
    grey = cv2.cvtColor(cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    cv2.copyTo(grey, near, out[y0:y1, x0:x1])
    return out


def grey_luma(rgb: np.ndarray, boxes: list[list[int]], *, smear: int = 24, tol: int = 8) -> np.ndarray | None:
    """The image as one luma channel (HxW uint8) when it is grey apart from the strokes of
    `boxes` and what they smeared around them; None when it has colour of its own.

    Most MedTrinity images are greyscale scans stored as RGB. Grey means that no pixel farther
    than `smear` px from a box outline has R or B more than `tol` away from G (JPEG's 4:2:0
    spreads a green stroke's chroma over its 16 px block; grey JPEG content stays within a level
    or two).
    Written as one channel such an image loses the strokes' tint entirely (decolour_near only
    clears its halo), is smaller, and encodes in half the time.
    """
    h, w = rgb.shape[:2]
    flat = rgb.reshape(h, 3 * w)
    spread = cv2.absdiff(flat[:, :-1], flat[:, 1:])  # |R-G|, |G-B| of each pixel, then B vs the next R
    spread[:, 2::3] = 0
    for x1, y1, x2, y2 in boxes:  # the strokes and their smear do not count
        top, bottom = max(0, int(y1) - smear), int(y2) + smear + 1
        left, right = 3 * max(0, int(x1) - smear), 3 * (int(x2) + smear + 1)
        for rows, cols in (((top, int(y1) + smear + 1), (left, right)), ((int(y2) - smear, bottom), (left, right)),
                           ((top, bottom), (left, 3 * (int(x1) + smear + 1))),
                           ((top, bottom), (3 * (int(x2) - smear), right))):
            spread[max(0, rows[0]):rows[1], max(0, cols[0]):cols[1]] = 0
    if int(spread.max()) > tol:
        return None
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def encode(rgb: np.ndarray, *, lossless: bool) -> tuple[bytes, str]:
    """Encode RGB (HxWx3) or grey (HxW) uint8 as PNG (sources that were lossless) or JPEG q95;
    returns (bytes, ext)."""
    if not lossless:
        grey = rgb.ndim == 2
        pixels = np.ascontiguousarray(rgb[:, :, None] if grey else rgb)
        try:
            return simplejpeg.encode_jpeg(pixels, JPEG_QUALITY, "GRAY" if grey else "RGB", "420"), "jpg"
        except (ValueError, RuntimeError) as e:
            raise BadImage("encode_failed", f"{rgb.shape}: {e}") from None
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb.ndim == 3 else rgb,
                           [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise BadImage("encode_failed", f"{rgb.shape}")
    return buf.tobytes(), "png"


def fit(rgb: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Downscale so the longer side is at most max_side; returns (image, scale factor)."""
    h, w = rgb.shape[:2]
    s = min(1.0, max_side / max(h, w))
    if s >= 1.0:
        return rgb, 1.0
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), s
