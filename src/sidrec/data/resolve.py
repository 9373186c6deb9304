"""Find the data a run should use: a canonical folder, a MiniOneRec folder, or raw Amazon 2018 to download."""

from __future__ import annotations

from pathlib import Path

from sidrec.errors import SidrecError
from sidrec.io import read_manifest, url_reachable as reachable

DEFAULT_CATEGORY = "Industrial_and_Scientific"
# Searched in order when no data is given: a project-local copy, then the shared read-only copy beside the checkout.
DEFAULT_CANDIDATES = (Path("data") / DEFAULT_CATEGORY, Path("..") / "shared" / "data" / "amazon18" / DEFAULT_CATEGORY)

NO_DATA_HELP = (
    "no data found and the Amazon 2018 download site is unreachable (offline?). Supply data with one of:\n"
    "  make demo DATA=/path/to/MiniOneRec/folder        (train/ valid/ test/ index/ from MiniOneRec)\n"
    "  make demo DATA=/path/to/canonical/dataset        (made by `sidrec data ...`)\n"
    f"  put a MiniOneRec folder at ./{DEFAULT_CANDIDATES[0]}\n"
    "  sidrec data amazon18 --category NAME --reviews R.json.gz --meta M.json.gz --out DIR   (local raw files)"
)


def is_canonical(folder: Path) -> bool:
    return (folder / "items.parquet").exists() and read_manifest(folder) is not None


def is_minionerec(folder: Path) -> bool:
    return (folder / "index").is_dir() and all((folder / s).is_dir() for s in ("train", "valid", "test"))


def resolve_data(data: str | Path | None, workdir: Path, category: str = DEFAULT_CATEGORY) -> Path:
    """Return a canonical dataset folder, importing or downloading into `workdir/dataset` when needed."""
    from sidrec.data.minionerec import import_minionerec

    target = workdir / "dataset"
    if data is not None:
        data = Path(data)
        if not data.exists():
            raise SidrecError(f"{data}: data folder does not exist")
        candidates = [data]
    else:
        candidates = [c for c in DEFAULT_CANDIDATES if c.exists()]
    for folder in candidates:
        if is_canonical(folder):
            return folder
        if is_minionerec(folder):
            if is_canonical(target) and read_manifest(target)["config"].get("src") == str(folder):
                return target
            import_minionerec(folder, target)
            return target
        if data is not None:
            raise SidrecError(f"{folder}: neither a canonical dataset (items.parquet + manifest.json) nor a MiniOneRec "
                              f"folder (train/ valid/ test/ index/)")
    if is_canonical(target):
        return target
    from sidrec.data import amazon18

    if not reachable(amazon18.AMAZON18_URL):
        raise SidrecError(NO_DATA_HELP)
    amazon18.preprocess_amazon18(category, target, cache_dir=workdir / "raw")
    return target
