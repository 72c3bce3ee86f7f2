"""Finding the images of an image folder: ImageNet layout (train/ val/ test/) or one class-per-folder tree.

Either PATH/train/<class>/* (+ PATH/val/<class>/*, + PATH/test/<class>/*) or one tree PATH/<class>/*.
Hidden files and folders are skipped. Every part must have the same class folders, each with at least
one file, and there must be at least two classes; otherwise one line says what to fix.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from bench.errors import BenchError

PARTS = ("train", "val", "test")


@dataclass
class Tree:
    root: Path
    layout: str  # 'train/ folders' or 'single tree'
    classes: list[str]
    parts: dict[str, dict[str, list[Path]]]  # part -> class -> sorted files

    def files(self, part: str) -> list[tuple[Path, int]]:
        """(file, class index) of one part, class by class, files sorted."""
        return [(f, k) for k, cls in enumerate(self.classes) for f in self.parts[part][cls]]

    def all_files(self) -> list[Path]:
        return [f for part in self.parts for f, _ in self.files(part)]

    def fingerprint(self, *extra) -> str:
        """A hash of every file's part, name, size and mtime (and `extra`): changes when any file does."""
        h = hashlib.sha256("|".join(map(str, (self.root, *extra))).encode())
        for part, per_class in self.parts.items():
            for files in per_class.values():
                for f in files:
                    st = f.stat()
                    h.update(f"|{part}|{f.relative_to(self.root)}|{st.st_size}|{st.st_mtime_ns}".encode())
        return h.hexdigest()[:24]


def _class_files(folder: Path) -> dict[str, list[Path]]:
    """Class name -> sorted image files (recursively, hidden files and folders skipped)."""
    out = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        files = []
        for dirpath, dirnames, filenames in os.walk(entry, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            files += [Path(dirpath) / f for f in sorted(filenames) if not f.startswith(".")]
        out[entry.name] = files
    return out


def scan(path: str) -> Tree:
    if not path:
        raise BenchError(
            "imagefolder needs a path: use imagefolder:PATH with PATH/<class>/<image> or PATH/train/<class>/<image>"
        )
    root = Path(path).expanduser()
    if not root.exists():
        raise BenchError(f"imagefolder path {root} does not exist; give an existing folder of class folders")
    if not root.is_dir():
        raise BenchError(f"imagefolder path {root} is not a folder; give a folder of class folders")
    root = root.resolve()
    if (root / "train").is_dir():
        layout = "train/ folders"
        part_dirs = {p: root / p for p in PARTS if (root / p).is_dir()}
    else:
        layout = "single tree"
        part_dirs = {"train": root}

    parts: dict[str, dict[str, list[Path]]] = {}
    for part, folder in part_dirs.items():
        per_class = _class_files(folder)
        if not per_class:
            stray = [p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
            extra = f" (it holds files like {stray[0]!r} directly)" if stray else ""
            raise BenchError(
                f"no class folders in {folder}{extra}; expected {folder}/<class>/<image> "
                f"or {root}/train/<class>/<image>"
            )
        for cls, files in per_class.items():
            if not files:
                raise BenchError(f"class folder {folder / cls} has no images; add some or remove the folder")
        parts[part] = per_class
    classes = list(parts["train"])
    if len(classes) < 2:
        raise BenchError(
            f"{part_dirs['train']} has only one class folder ({classes[0]!r}); a classifier needs at least two"
        )
    for part in ("val", "test"):
        if part in parts and list(parts[part]) != classes:
            got = set(parts[part])
            missing, extra = sorted(set(classes) - got), sorted(got - set(classes))
            raise BenchError(
                f"{part_dirs[part]} has different class folders from {part_dirs['train']}: "
                f"missing {missing}, extra {extra}; make the class folders match"
            )
    return Tree(root, layout, classes, parts)
