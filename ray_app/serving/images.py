"""What an upload to predict must be: an image, checked by the platform itself, never a path.

Frameworks read more than images from a path: Ultralytics treats a `.txt` or `.csv` source as a
list of paths, and takes folders and globs, so a file named by its uploader and handed on could
make the model server read files on its own disk (DESIGN §12: what users upload is data, never a
path). The API decodes every upload here before any model is touched (a refusal is a 422 naming
the file and the reason); the model server writes each one under a name of its own whose suffix
is the format found in the bytes, and the bundled trainers' predict.py decode the file themselves
and hand the framework pixels.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

# the formats every bundled trainer reads (OpenCV and Pillow both decode them), with the suffix the
# model server writes; MPO is how Pillow names the JPEG files many phone cameras write
SUFFIXES = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "BMP": ".bmp", "WEBP": ".webp", "TIFF": ".tif"}
ACCEPTED = "JPEG, PNG, BMP, WebP or TIFF"
# an image is decoded whole to be checked: bound what one upload can make the API allocate
# (Pillow's own guard only warns below twice its 89 Mpx default)
MAX_PIXELS = 50_000_000


class NotAnImage(ValueError):
    """An upload that is not an image the platform accepts; the message says why."""


@dataclass(frozen=True)
class UploadProblem:
    index: int
    name: str
    reason: str

    @property
    def message(self) -> str:
        return f"{self.name!r}: {self.reason}"


def image_suffix(data: bytes, decode: bool = True) -> str:
    """The file suffix of the image in `data` (".png", ".jpg", ...), found from its bytes alone;
    with `decode`, every pixel is decoded too, so a truncated or corrupt image is refused here and
    not inside a model. NotAnImage otherwise."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise NotAnImage("empty file")
    try:
        with Image.open(io.BytesIO(data)) as img:
            suffix = SUFFIXES.get(img.format or "")
            if suffix is None:
                raise NotAnImage(f"{img.format} images are not accepted ({ACCEPTED})")
            width, height = img.size
            if width * height > MAX_PIXELS:
                raise NotAnImage(f"{width}×{height} pixels is more than the {MAX_PIXELS:,} accepted")
            if decode:
                img.load()
    except UnidentifiedImageError:
        raise NotAnImage(f"not an image ({ACCEPTED})") from None
    except NotAnImage:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:  # Pillow's ways of saying corrupt
        raise NotAnImage(f"not a readable image: {exc}") from None
    return suffix


def upload_problems(files: list[tuple[str, bytes]]) -> list[UploadProblem]:
    """Each upload that is not an accepted image, with the reason (empty: all are)."""
    problems = []
    for i, (name, data) in enumerate(files):
        try:
            image_suffix(data)
        except NotAnImage as exc:
            problems.append(UploadProblem(i, name, str(exc)))
    return problems
