"""Image folders decoded whole into memory: every image's shorter side rescaled to `image_size`, centre cropped.

Decoded once (as "L" when every image is greyscale, else "RGB", alpha dropped) and cached in
$BENCH_CACHE/imagefolder/<key>.pt, where the key hashes the absolute path, every file's name, size and
mtime and the image size; a later load with the same files reads the cache (info['cache'] == 'hit').
A file that is no image, or is truncated, stops the load with one line naming it.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import torch

from bench.data import files, images, tree

CACHE_FORMAT = 2  # bump when the cache layout or the decoding changes


def load(path: str, image_size: int):
    """({part: (uint8 [N, C, S, S], int64 labels)}, classes, info) of the folder at `path`."""
    found = tree.scan(path)
    cache_file = files.cache_root() / "imagefolder" / f"{found.fingerprint(f'v{CACHE_FORMAT}', image_size)}.pt"
    listing = found.all_files()
    info = {"path": str(found.root), "layout": found.layout, "cache_file": str(cache_file), "n_files": len(listing)}

    cached = _read_cache(cache_file, list(found.parts), found.classes)
    if cached is not None:
        groups, mode = cached
        info.update(cache="hit", mode=mode)
        return groups, found.classes, info

    mode = images.choose_mode(images.header(f)[0] for f in listing)
    channels = 1 if mode == "L" else 3
    groups = {}
    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        for part in found.parts:
            part_files = found.files(part)
            x = torch.empty((len(part_files), channels, image_size, image_size), dtype=torch.uint8)
            y = torch.tensor([k for _, k in part_files], dtype=torch.int64)
            for i, img in enumerate(pool.map(lambda item: images.decode_image(item[0], mode, image_size), part_files)):
                x[i] = img
            groups[part] = (x, y)
    obj = {
        "format": CACHE_FORMAT,
        "classes": found.classes,
        "mode": mode,
        "groups": {g: {"x": x, "y": y} for g, (x, y) in groups.items()},
    }
    files.write_atomically(cache_file, lambda fh: torch.save(obj, fh))
    info.update(cache="miss", mode=mode)
    return groups, found.classes, info


def _read_cache(path, group_names: list[str], classes: list[str]):
    if not path.is_file():
        return None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
        if obj.get("format") != CACHE_FORMAT or obj.get("classes") != classes:
            return None
        groups = {g: (obj["groups"][g]["x"], obj["groups"][g]["y"]) for g in group_names}
        if any(x.dtype != torch.uint8 or len(x) != len(y) for x, y in groups.values()):
            return None
        return groups, obj["mode"]
    except Exception:  # noqa: BLE001 - a damaged cache is simply rebuilt
        return None
