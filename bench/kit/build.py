"""Build the device kit: the Fashion-MNIST files and a wheelhouse of what the studies need beyond a GPU image.

The GPU image already holds torch, torchvision, timm, pandas, rich, scipy, matplotlib and what they need;
the kit brings the rest (mlflow-skinny, optuna, sqlalchemy, alembic, psutil, nvidia-ml-py, statsmodels...)
as wheels for the image's Python on manylinux x86_64. pip resolves the whole closure with the image's
packages pinned at the image's versions, and only what the image lacks is downloaded. Resolutions and
wheels are cached under $BENCH_CACHE/kit-wheels, so a second build of the same kit needs no network.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

from bench.data.files import SYSTEM_LOCATIONS, cache_root
from bench.data.idx import GZ_FILES
from bench.errors import BenchError, one_line
from bench.kit import manifest as kit_manifest

# What the studies import beyond the image. mlflow-skinny, not mlflow: full mlflow's closure needs pyarrow
# (~90 MB); skinny holds tracking, the registry and the pyfunc models the studies write.
KIT_PACKAGES = ("mlflow-skinny", "optuna", "sqlalchemy", "alembic", "psutil", "nvidia-ml-py", "filelock", "statsmodels")
# The image's own packages; with what they need (found here), they stay out of the kit.
IMAGE_PACKAGES = ("torch", "torchvision", "timm", "pandas", "rich", "scipy", "matplotlib", "numpy", "pillow", "pip")
# Modern wheels carry compound tags (manylinux2014 + manylinux_2_17 + ...); pip matches any one given here.
PLATFORMS = ("manylinux2014_x86_64", *(f"manylinux_2_{minor}_x86_64" for minor in range(17, 29)))
CARRY_LIMIT_MIB = 64  # what a GPU machine typically takes along with the working tree
FASHION_FILES = GZ_FILES


def canonical(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def local_image() -> dict[str, str | None]:
    """This machine's versions of the image's packages and of everything they need: the stand-in for an
    image whose `pip freeze` was not given."""
    todo, pins = list(IMAGE_PACKAGES), {}
    while todo:
        name = canonical(todo.pop())
        if name in pins:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # needed only under a marker this machine does not meet
        pins[name] = dist.version
        for line in dist.requires or ():
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return pins


def local_kit() -> dict[str, str]:
    """This machine's versions of the kit's packages, where it has them: the store and journal that a GPU
    run brings back then open here (an older MLflow refuses a newer one's database schema)."""
    pins = {}
    for name in KIT_PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            pins[canonical(name)] = metadata.version(name)
    return pins


def frozen_image(path: Path) -> dict[str, str | None]:
    """The image's packages from its `python3 -m pip freeze` (name==version; `name @ url` has no version)."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise BenchError(
            f"cannot read --image {path}: {one_line(exc)}; give the GPU image's `python3 -m pip freeze` saved to a file"
        ) from None
    pins: dict[str, str | None] = {}
    for line in lines:
        found = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:==\s*([^\s;]+)|@)", line.strip())
        if found:
            pins[canonical(found[1])] = found[2]
    if not pins:
        raise BenchError(f"--image {path} names no package; give the GPU image's `python3 -m pip freeze` output")
    return pins


def target_flags(python: str) -> list[str]:
    """pip's flags for wheels that CPython `python` on manylinux x86_64 can install."""
    platforms = [flag for name in PLATFORMS for flag in ("--platform", name)]
    return [
        "--only-binary=:all:",
        "--python-version",
        python,
        "--implementation",
        "cp",
        "--abi",
        f"cp{python.replace('.', '')}",
        *platforms,
    ]


def pip(args: list[str], what: str) -> None:
    """Run this interpreter's pip quietly; its last line of complaint becomes our one line."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args], capture_output=True, text=True
    )
    if done.returncode != 0:
        lines = done.stderr.splitlines()
        errors = [line for line in lines if line.startswith("ERROR")] or lines
        reason = errors[-1] if errors else f"exit {done.returncode}"
        raise BenchError(
            f"{what} failed: {reason.removeprefix('ERROR: ')}; check the network and the "
            "package index pip is configured with"
        )


def resolve(python: str, image: dict[str, str | None], work: Path) -> list[dict]:
    """The wheels the kit needs: the closure of KIT_PACKAGES for `python`, with the image's packages
    pinned at its versions and left out, and the kit's at this machine's. Each: name, version, file, url,
    sha256."""
    constraints = work / "constraints.txt"
    pinned = {**local_kit(), **{name: version for name, version in image.items() if version}}
    constraints.write_text("".join(f"{name}=={version}\n" for name, version in pinned.items()))
    report = work / "report.json"
    pip(
        [
            "install",
            "--dry-run",
            "--ignore-installed",
            "--quiet",
            "--report",
            str(report),
            "--target",
            str(work / "target"),
            *target_flags(python),
            "-c",
            str(constraints),
            *KIT_PACKAGES,
        ],
        f"resolving {', '.join(KIT_PACKAGES)} for Python {python}",
    )
    wheels = []
    for item in json.loads(report.read_text())["install"]:
        name = canonical(item["metadata"]["name"])
        if name in image:
            continue
        url = item["download_info"]["url"]
        digest = item["download_info"].get("archive_info", {}).get("hashes", {}).get("sha256")
        wheels.append(
            {
                "name": name,
                "version": item["metadata"]["version"],
                "url": url,
                "sha256": digest,
                "file": urllib.parse.unquote(url.rsplit("/", 1)[-1]),
            }
        )
    return sorted(wheels, key=lambda w: w["name"])


def sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(block)
    return hasher.hexdigest()


def cached(python: str, image: dict[str, str | None]) -> tuple[list[dict], Path]:
    """The kit's wheels, each in the cache's files/ folder with the hash its index gave: resolved and
    downloaded once per (Python, image), then reused without the network."""
    cache = cache_root() / "kit-wheels"
    files = cache / "files"
    key = hashlib.sha256(
        json.dumps([python, PLATFORMS, KIT_PACKAGES, sorted(local_kit().items()), sorted(image.items())]).encode()
    )
    resolution = cache / f"resolved-{key.hexdigest()[:16]}.json"
    if resolution.is_file():
        wheels = json.loads(resolution.read_text())
        if all(_intact(files / w["file"], w["sha256"]) for w in wheels):
            return wheels, files
    files.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kit-resolve-") as work:
        wheels = resolve(python, image, Path(work))
    absent = [w for w in wheels if not _intact(files / w["file"], w["sha256"])]
    if absent:
        print(f"downloading {len(absent)} wheels for Python {python}", file=sys.stderr)
        for wheel in absent:  # a torn or altered file: pip download would keep it
            (files / wheel["file"]).unlink(missing_ok=True)
        pip(
            [
                "download",
                "--no-deps",
                "--quiet",
                "-d",
                str(files),
                *target_flags(python),
                *(f"{w['name']}=={w['version']}" for w in absent),
            ],
            "downloading the kit's wheels",
        )
    for wheel in wheels:
        if not _intact(files / wheel["file"], wheel["sha256"]):
            raise BenchError(
                f"downloaded {wheel['file']} does not match the index's sha256; delete {files} and build again"
            )
    kit_manifest.write_text(resolution, json.dumps(wheels, indent=1))
    return wheels, files


def _intact(path: Path, digest: str | None) -> bool:
    return path.is_file() and (digest is None or sha256(path) == digest)


def data_source(folder: Path | None) -> Path:
    """The folder holding the four Fashion-MNIST .gz files, or one line on what is missing."""
    source = folder or Path(SYSTEM_LOCATIONS["fashion-mnist"][0])
    missing = [name for name in FASHION_FILES if not (source / name).is_file()]
    if missing:
        raise BenchError(
            f"{source} lacks {', '.join(missing)}: apt-get install dataset-fashion-mnist, or "
            "give --data DIR holding the four Fashion-MNIST .gz files"
        )
    return source


def build(out: Path, python: str, data: Path | None, image_freeze: Path | None) -> dict:
    """Write the kit into `out` (replaced whole once the new one is complete) and return its manifest."""
    if not re.fullmatch(r"3\.\d+", python):
        raise BenchError(f"--python {python!r} is not a CPython version; give one like 3.12")
    source = data_source(data)
    if out.exists() and not (out / kit_manifest.MANIFEST).is_file() and any(out.iterdir()):
        raise BenchError(f"{out} exists and is not a kit; give another --out, or empty it")
    image = frozen_image(image_freeze) if image_freeze else local_image()
    wheels, files = cached(python, image)
    out.parent.mkdir(parents=True, exist_ok=True)
    new = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    try:
        manifest = _fill(new, wheels, files, source, python, image)
        _swap(new, out)
    finally:
        shutil.rmtree(new, ignore_errors=True)
    return manifest


def _fill(kit: Path, wheels: list[dict], files: Path, source: Path, python: str, image: dict[str, str | None]) -> dict:
    (kit / kit_manifest.WHEELS).mkdir()
    for wheel in wheels:
        shutil.copy(files / wheel["file"], kit / kit_manifest.WHEELS / wheel["file"])
    data = kit / kit_manifest.DATA / "fashion-mnist"
    data.mkdir(parents=True)
    for name in FASHION_FILES:
        shutil.copy(source / name, data / name)
    in_kit = {w["name"]: w["version"] for w in wheels}
    manifest = {
        "python": python,
        "platforms": list(PLATFORMS),
        "image": image,
        "wheels": [{key: w[key] for key in ("name", "version", "file", "sha256")} for w in wheels],
        # Only the packages the studies ask for are installed by name; pip takes what they need from the
        # image where it has it, from the wheels where not.
        "requirements": [f"{name}=={in_kit[canonical(name)]}" for name in KIT_PACKAGES if canonical(name) in in_kit],
        "data": {"fashion-mnist": list(FASHION_FILES)},
    }
    kit_manifest.write(kit, manifest)
    return manifest


def _swap(new: Path, out: Path) -> None:
    """Put the finished kit `new` at `out`; an old kit there is removed only after."""
    old = out.with_name(f".{out.name}.old-{os.getpid()}") if out.exists() else None
    if old is not None:
        os.rename(out, old)
    os.rename(new, out)
    if old is not None:
        shutil.rmtree(old)


def size_mib(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20
