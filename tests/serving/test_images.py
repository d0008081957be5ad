"""What predict accepts as an image (ray_app/serving/images.py): found from the bytes alone, decoded
whole, bounded in pixels; the suffix the model server names the file with comes from the format."""

from __future__ import annotations

import io
import os

import pytest
from PIL import Image

from ray_app.serving.images import MAX_PIXELS, NotAnImage, image_suffix, upload_problems


def encoded(fmt: str, size=(16, 12), mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, format=fmt)
    return buf.getvalue()


def truncated_png() -> bytes:
    """A PNG cut in the middle of its pixel data: its header reads, its pixels do not."""
    buf = io.BytesIO()
    Image.frombytes("RGB", (64, 64), os.urandom(64 * 64 * 3)).save(buf, format="PNG")
    return buf.getvalue()[:6000]


@pytest.mark.parametrize("fmt,suffix", [("PNG", ".png"), ("JPEG", ".jpg"), ("BMP", ".bmp"), ("WEBP", ".webp"),
                                        ("TIFF", ".tif")])
def test_accepted_formats_get_the_suffix_of_what_they_are(fmt, suffix):
    assert image_suffix(encoded(fmt)) == suffix


def test_what_is_not_an_accepted_image_is_refused_with_the_reason():
    cases = {b"/etc/hostname\n": "not an image", b"": "empty file", truncated_png(): "not a readable image",
             encoded("GIF"): "GIF images are not accepted", b"\x89PNG\r\n\x1a\n" + b"\0" * 30: "not"}
    for data, reason in cases.items():
        with pytest.raises(NotAnImage, match=reason):
            image_suffix(data)


def test_a_huge_image_is_refused_from_its_header_before_it_is_decoded():
    side = int(MAX_PIXELS ** 0.5) + 10
    bomb = encoded("PNG", (side, side), mode="1")  # a few kB on the wire, 50 Mpx once decoded
    assert len(bomb) < 1_000_000
    with pytest.raises(NotAnImage, match="pixels is more than"):
        image_suffix(bomb)
    # the model server only sniffs (decode=False): the header is read, the pixels are not
    assert image_suffix(truncated_png(), decode=False) == ".png"


def test_problems_name_each_bad_upload_by_position_and_name():
    problems = upload_problems([("a.png", encoded("PNG")), ("paths.txt", b"x.png\n"), ("b.jpg", encoded("JPEG"))])
    assert [(p.index, p.name) for p in problems] == [(1, "paths.txt")]
    assert problems[0].message == "'paths.txt': not an image (JPEG, PNG, BMP, WebP or TIFF)"
