"""One image file -> uint8 tensor [C, H, W]: torchvision.io decoding, transforms.v2 resizing.

JPEG, PNG, WebP and GIF are decoded by torchvision.io; other formats PIL reads (BMP, TIFF, ...) fall
back to PIL. Every image folder path (in memory, streamed) and `bench.predict` decode through here, so
a served model sees its images exactly as training did.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torchvision.io import ImageReadMode
from torchvision.io import decode_image as tv_decode
from torchvision.transforms.v2 import functional as TF

from bench.errors import BenchError, one_line

GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
_READ_MODES = {"L": ImageReadMode.GRAY, "RGB": ImageReadMode.RGB}


def file_bytes(path: Path) -> torch.Tensor:
    try:
        return torch.frombuffer(bytearray(Path(path).read_bytes()), dtype=torch.uint8)
    except OSError as exc:
        raise BenchError(f"cannot read image {path}: {one_line(exc)}; check the file") from None


def decode_bytes(data: torch.Tensor, mode: str, path: Path) -> torch.Tensor:
    """uint8 [C, H, W] (C = 1 for mode 'L', 3 for 'RGB') from a file's bytes; one line naming `path` if bad."""
    try:
        return tv_decode(data, mode=_READ_MODES[mode])
    except RuntimeError as exc:
        reason = exc
    try:  # formats torchvision does not decode (BMP, TIFF, ...)
        return _decode_with_pil(data, mode)
    except Exception:  # noqa: BLE001 - torchvision's reason is the more useful one
        raise BenchError(f"cannot decode image {path}: {_reason(reason)}; remove or replace the file") from None


def _decode_with_pil(data: torch.Tensor, mode: str) -> torch.Tensor:
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data.numpy().tobytes())) as img:
        img = img.convert(mode)
        w, h = img.size
        raw = bytearray(img.tobytes())
    c = 1 if mode == "L" else 3
    return torch.frombuffer(raw, dtype=torch.uint8).view(h, w, c).permute(2, 0, 1).contiguous()


def _reason(exc: BaseException) -> str:
    text = one_line(exc)
    return text.rsplit(", ", 1)[-1] if "/csrc/" in text else text  # drop torchvision's source location


def shorter_side_to(image: torch.Tensor, size: int) -> torch.Tensor:
    """Isotropic rescale so that the shorter side is `size` (antialiased bilinear)."""
    h, w = image.shape[-2:]
    if min(h, w) == size:
        return image
    return TF.resize(image, size, antialias=True)


def decode_image(path: Path, mode: str, size: int) -> torch.Tensor:
    """The file's shorter side rescaled to `size`, then the centre `size` x `size` square."""
    image = shorter_side_to(decode_bytes(file_bytes(path), mode, path), size)
    return TF.center_crop(image, [size, size]).contiguous()


def header(path: Path) -> tuple[str, int, int]:
    """(PIL mode, width, height) from the file's header alone; one line naming the file if it is no image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # Past PIL's pixel limit a header is a decompression bomb: decoding it would exhaust memory.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                return img.mode, img.size[0], img.size[1]
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BenchError(
            f"cannot read image {path}: a decompression bomb ({one_line(exc)}); remove or replace the file"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise BenchError(f"cannot read image {path}: {one_line(exc)}; remove or replace the file") from None


def choose_mode(modes) -> str:
    """'L' when every image is greyscale, else 'RGB' (alpha dropped)."""
    # Every mode is taken before deciding: given a generator of headers, all() would stop at the first
    # colour image and leave the other files' headers unread, a bad file (a bomb) found only mid-run.
    return "L" if all([m in GREY_MODES for m in modes]) else "RGB"
