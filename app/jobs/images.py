"""The image job: crops and resizes an uploaded picture and returns a PNG."""

from __future__ import annotations

import io

from flask import current_app

from app.jobs.progress import report_progress
from app.jobs.registry import FileData, registry

MAX_SIDE = 4096


@registry.register()
def resize_image(
    image: FileData, width: int = 256, height: int = 256, crop: list[int] | None = None
) -> FileData:
    """Crop the image to `crop` [left, top, right, bottom] (or centre it), resize it, return a PNG."""
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
        raise ValueError(f"width and height must be between 1 and {MAX_SIDE} pixels")
    # Imported here: Pillow weighs on the memory of every worker, most of which never resize.
    from PIL import Image, ImageOps, UnidentifiedImageError

    report_progress(0, 4, "opening")
    Image.MAX_IMAGE_PIXELS = current_app.config["MAX_IMAGE_PIXELS"]
    try:
        opened = Image.open(io.BytesIO(image.data))
        opened.load()
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError) as error:
        raise ValueError(f"the upload is not an image this server can read: {error}") from None
    picture: Image.Image = ImageOps.exif_transpose(opened)
    report_progress(1, 4, "cropping")
    if crop is not None:
        picture = picture.crop(_crop_box(crop, picture.size))
        report_progress(2, 4, "resizing")
        picture = picture.resize((width, height), Image.Resampling.LANCZOS)
    else:
        report_progress(2, 4, "resizing")
        picture = ImageOps.fit(picture, (width, height), Image.Resampling.LANCZOS)
    report_progress(3, 4, "encoding")
    if picture.mode not in ("RGB", "RGBA", "L", "LA"):
        picture = picture.convert("RGBA")
    out = io.BytesIO()
    picture.save(out, format="PNG", optimize=True)
    report_progress(4, 4, "done")
    return FileData(out.getvalue(), "image/png", "resized.png")


def _crop_box(crop: list[int], size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Return the crop box, checked to lie inside the picture."""
    if len(crop) != 4 or not all(isinstance(edge, int) for edge in crop):
        raise ValueError("crop must be four integers: [left, top, right, bottom]")
    left, top, right, bottom = crop
    if not (0 <= left < right <= size[0] and 0 <= top < bottom <= size[1]):
        raise ValueError(f"crop box {crop} does not fit inside the {size[0]}x{size[1]} image")
    return left, top, right, bottom
