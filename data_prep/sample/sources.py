"""Loading each real source image and displaying it as RGB uint8, with its ROI boxes resolved.

Source packages (pydicom, pydicom-data, scikit-image, wsidicom-data, pynrrd, the pyradiomics
sdist) are only needed here, at generation time; the committed sample does not need them.
"""
from __future__ import annotations

import importlib.util
import io
import tarfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import nrrd
import numpy as np
import pydicom
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_color_lut, apply_modality_lut

from data_prep.sample.catalog import Box, Finding, SourceSpec
from data_prep.sample.imaging import canonical_axial, neutralise_green, percentile_normalise, to_rgb, window
from data_prep.sample.roi import resolve_roi


@dataclass(frozen=True)
class Frame:
    """One displayed 2-D image of a source (a slice or frame) with its candidate ROIs."""

    spec: SourceSpec
    index: int
    rgb: np.ndarray
    rois: tuple[tuple[Box, Finding], ...]


def display_grey(values: np.ndarray, spec: SourceSpec, invert: bool) -> np.ndarray:
    """Window (CT, fixed unit) or percentile-normalise (everything else) a grey image."""
    if spec.window is not None:
        grey = window(values, *spec.window)
    else:
        grey = percentile_normalise(values, *spec.percentiles, mask=values > values.min())
    return 255 - grey if invert else grey


def stretch_colour(rgb: np.ndarray, percentiles: tuple[float, float]) -> np.ndarray:
    """Brighten a dim colour image (an echo cine frame) by its non-black luminance percentiles."""
    luminance = rgb.astype(np.float64).mean(axis=2)
    lo, hi = np.percentile(luminance[luminance > 0], percentiles)
    scaled = (rgb.astype(np.float64) - lo) * 255.0 / max(hi - lo, 1e-6)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def crop_frame(rgb: np.ndarray, boxes: list[Box], crop: Box | None) -> tuple[np.ndarray, list[Box]]:
    """Cut away empty film or side panels; boxes move with the image."""
    if crop is None:
        return rgb, boxes
    x1, y1, x2, y2 = crop
    moved = [(b[0] - x1, b[1] - y1, b[2] - x1, b[3] - y1) for b in boxes]
    return np.ascontiguousarray(rgb[y1:y2, x1:x2]), moved


def is_axial(orientation: list[float] | None) -> bool:
    """Whether an ImageOrientationPatient describes a (near) axial plane."""
    return orientation is not None and abs(orientation[0]) > 0.9 and abs(orientation[4]) > 0.9


def dicom_frame(ds: pydicom.Dataset, pixels: np.ndarray, spec: SourceSpec) -> np.ndarray:
    """One DICOM frame as displayed RGB: palette/colour as stored, grey via modality LUT + VOI."""
    photometric = ds.PhotometricInterpretation
    if photometric == "PALETTE COLOR":
        colour = apply_color_lut(pixels, ds)
        rgb = (colour >> 8).astype(np.uint8) if colour.dtype != np.uint8 else colour
    elif int(ds.SamplesPerPixel) == 3:
        rgb = stretch_colour(pixels.astype(np.uint8), spec.percentiles) if spec.stretch else pixels.astype(np.uint8)
    else:
        values = apply_modality_lut(pixels, ds).astype(np.float64)
        rgb = to_rgb(display_grey(values, spec, invert=photometric == "MONOCHROME1"))
    orientation = ds.get("ImageOrientationPatient")
    if is_axial(orientation):
        rgb = canonical_axial(rgb, float(orientation[0]), float(orientation[4]))
    return rgb


def load_dicom(spec: SourceSpec) -> list[tuple[int, np.ndarray, None]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(get_testdata_file(spec.resource))
        pixels = ds.pixel_array
    stack = pixels if int(ds.get("NumberOfFrames", 1) or 1) > 1 else pixels[None]
    return [(i, dicom_frame(ds, stack[i], spec), None) for i in spec.frames]


def package_file(resource: str) -> Path:
    """`module/relative/path` inside an installed package, found without importing the package."""
    module, relative = resource.split("/", 1)
    found = importlib.util.find_spec(module)
    if found is None or not found.submodule_search_locations:
        raise FileNotFoundError(f"package {module!r} is not installed")
    return Path(list(found.submodule_search_locations)[0]) / relative


def load_picture(spec: SourceSpec) -> list[tuple[int, np.ndarray, None]]:
    with Image.open(package_file(spec.resource)) as picture:
        return [(0, to_rgb(np.asarray(picture.convert("RGB"))), None)]


def read_nrrd(tar: tarfile.TarFile, member: str) -> tuple[np.ndarray, dict]:
    extracted = tar.extractfile(member)
    if extracted is None:
        raise FileNotFoundError(member)
    handle = io.BytesIO(extracted.read())
    header = nrrd.read_header(handle)
    return nrrd.read_data(header, handle), header


def load_radiomics(spec: SourceSpec, sdist: Path) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Axial slices of a pyradiomics test volume, each with its lesion mask, in display orientation."""
    with tarfile.open(sdist, "r:gz") as tar:
        volume, header = read_nrrd(tar, spec.resource)
        label, _ = read_nrrd(tar, spec.resource.replace("_image.nrrd", "_label.nrrd"))
    directions = np.asarray(header["space directions"], dtype=np.float64)
    frames = []
    for z in spec.frames:
        values = canonical_axial(volume[:, :, z].T.astype(np.float64), directions[0][0], directions[1][1])
        mask = canonical_axial(label[:, :, z].T > 0, directions[0][0], directions[1][1])
        frames.append((z, to_rgb(display_grey(values, spec, invert=False)), mask))
    return frames


def load_frames(spec: SourceSpec, radiomics_sdist: Path) -> list[Frame]:
    """All frames of a source that the sample uses, displayed, with ROI boxes resolved."""
    if spec.loader == "dicom":
        raw = load_dicom(spec)
    elif spec.loader == "picture":
        raw = load_picture(spec)
    else:
        raw = load_radiomics(spec, radiomics_sdist)
    frames = []
    for index, rgb, mask in raw:
        clean = neutralise_green(rgb)
        boxes = [resolve_roi(roi, clean, mask) for roi in spec.rois]
        cropped, moved = crop_frame(clean, boxes, spec.crop)
        findings = (roi.finding for roi in spec.rois)
        frames.append(Frame(spec, index, cropped, tuple(zip(moved, findings, strict=True))))
    return frames
