"""Image sets on disk: MVTec AD layouts, plain folders of good images, and the ELPV export."""

import csv
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

from detector.frames import IMAGE_SUFFIXES, list_images


@dataclass(frozen=True)
class TestImage:
    path: Path
    label: int  # 0 good, 1 defective
    defect_type: str
    mask: Path | None


def training_images(data: Path) -> list[Path]:
    """Good training images: `train/good` of an MVTec AD layout, or every image in a folder."""
    data = Path(data)
    if not data.is_dir():
        raise FileNotFoundError(f"training data folder not found: {data}")
    folder = data / "train" / "good" if (data / "train" / "good").is_dir() else data
    images = list_images(folder)
    if len(images) < 4:
        raise ValueError(f"{folder} holds {len(images)} images; training needs at least 4 "
                         f"({', '.join(IMAGE_SUFFIXES)})")
    return images


def test_images(data: Path) -> list[TestImage]:
    """`test/<type>/*` of an MVTec AD layout with `ground_truth/<type>/<stem>_mask.png` if present."""
    data = Path(data)
    test_root = data / "test"
    if not test_root.is_dir():
        raise FileNotFoundError(f"{data} has no test/ folder (MVTec AD layout expected)")
    items = []
    for type_dir in sorted(p for p in test_root.iterdir() if p.is_dir()):
        label = 0 if type_dir.name == "good" else 1
        for image in list_images(type_dir):
            mask = data / "ground_truth" / type_dir.name / f"{image.stem}_mask.png"
            items.append(TestImage(image, label, type_dir.name,
                                   mask if label and mask.is_file() else None))
    if not items:
        raise ValueError(f"{test_root} holds no images")
    return items


def split_holdout(images: list[Path], fraction: float, seed: int) -> tuple[list[Path], list[Path]]:
    """Seeded split of good images into (train, held-out validation)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation fraction must be in (0, 1): {fraction}")
    shuffled = list(images)
    random.Random(seed).shuffle(shuffled)
    count = max(2, round(len(shuffled) * fraction))
    return sorted(shuffled[count:]), sorted(shuffled[:count])


def elpv_cells(label: str) -> list[Path]:
    """The ELPV cell images (elpv-dataset package) labelled good (defect probability 0) or
    defective (probability 1), sorted by name."""
    try:
        import elpv_dataset
    except ImportError as error:
        raise RuntimeError("the ELPV data comes with the elpv-dataset package: "
                           "pip install 'lineguard[data]'") from error
    root = Path(elpv_dataset.__file__).parent / "data"
    with open(root / "labels.csv") as handle:
        rows = [line.split() for line in handle if line.strip()]
    wanted = {"good": 0.0, "defective": 1.0}[label]
    return sorted(root / path for path, probability, _ in rows if float(probability) == wanted)


def export_elpv(out: Path, train_fraction: float = 0.6, limit: int | None = None,
                seed: int = 0) -> dict[str, int]:
    """Write the ELPV solar-cell set (from the elpv-dataset package) as an MVTec AD layout.

    Defect probability 0 is good, 1 is defective; the uncertain 1/3 and 2/3 are left out. A seeded
    `train_fraction` of the good cells goes to train/good, the rest to test/good; defective
    cells go to test/defective. ELPV has image labels only, so there is no ground_truth/.
    `limit` caps the number of images per folder (for quick runs).
    """
    good, bad = elpv_cells("good"), elpv_cells("defective")
    rng = random.Random(seed)
    rng.shuffle(good)
    rng.shuffle(bad)
    cut = round(len(good) * train_fraction)
    folders = {"train/good": good[:cut], "test/good": good[cut:], "test/defective": bad}
    counts = {}
    for name, paths in folders.items():
        target = Path(out) / name
        target.mkdir(parents=True, exist_ok=True)
        chosen = paths[:limit] if limit else paths
        for path in chosen:
            shutil.copyfile(path, target / path.name)
        counts[name] = len(chosen)
    with open(Path(out) / "SOURCE.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["folder", "images"], *counts.items()])
    return counts
