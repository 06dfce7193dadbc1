"""Training a teacher-student model on good images, with held-out validation and calibration."""

import math
import random
import time
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

from detector.calibration import Calibration, calibrate
from detector.datasets import split_holdout, test_images, training_images
from detector.frames import fit_to_square, read_image
from detector.model import ModelConfig, TeacherStudent, stpm_loss
from detector.store import save_model
from shared.logging import get_logger

log = get_logger(__name__)


class TrainOptions(BaseModel):
    """How to train; the architecture itself is a ModelConfig."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(30, ge=1)
    batch_size: int = Field(16, ge=1)
    optimizer: Literal["sgd", "adam"] = "adam"
    learning_rate: float | None = Field(None, gt=0)  # None: 0.4 for SGD (STPM), 1e-3 for Adam
    validation_fraction: float = Field(0.2, gt=0, lt=1)
    seed: int = 0
    device: str = "cpu"
    # bf16 autocast on CPU, fp16/bf16 on CUDA; float32 by default
    precision: Literal["float32", "bfloat16"] = "float32"
    teacher_weights: Path | None = None
    # also place the threshold with the labelled test images of an MVTec layout (F1-max)
    calibrate_on_test: bool = False
    # stop when validation loss has not improved for this many epochs (0: never)
    patience: int = Field(0, ge=0)
    limit: int | None = Field(None, ge=4)  # use at most this many good images (quick runs)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_prepared(paths: list[Path], config: ModelConfig, desc: str) -> torch.Tensor:
    """Decode and resize images once: (N, S, S, 3) uint8."""
    images = [fit_to_square(read_image(p), config.image_size, config.resize)
              for p in tqdm(paths, desc=desc, unit="img", leave=False, disable=None)]
    return torch.from_numpy(np.stack(images))


@torch.no_grad()
def validate(model: TeacherStudent, frames: torch.Tensor, batch_size: int, device: str
             ) -> tuple[float, np.ndarray]:
    """Validation pass: mean distillation loss and image scores, from one forward pass."""
    model.eval()
    losses, scores = [], []
    for start in range(0, len(frames), batch_size):
        x = model.normaliser(frames[start:start + batch_size].to(device))
        teacher_levels, student_levels = model.features(x)
        losses.append(float(stpm_loss(teacher_levels, student_levels)) * len(x))
        batch_scores, _ = model.score_features(teacher_levels, student_levels, tuple(x.shape[-2:]))
        scores.append(batch_scores.cpu().numpy())
    return sum(losses) / len(frames), np.concatenate(scores)


def train(data: Path, out: Path, config: ModelConfig, options: TrainOptions) -> Path:
    """Train on the good images of `data` and write the best epoch's model to `out`.

    The model is (re)written each time validation loss improves, so an interrupted run leaves
    the best model so far.
    """
    seed_everything(options.seed)
    started = time.monotonic()
    good = training_images(data)
    if options.limit:
        good = sorted(random.Random(options.seed).sample(good, min(options.limit, len(good))))
    train_paths, val_paths = split_holdout(good, options.validation_fraction, options.seed)
    train_frames = load_prepared(train_paths, config, "decode train")
    val_frames = load_prepared(val_paths, config, "decode validation")
    log.info("training", data=str(data), train_images=len(train_paths),
             validation_images=len(val_paths), **config.model_dump())

    model = TeacherStudent(config)
    model.teacher.load_imagenet(options.teacher_weights)
    model.to(options.device)
    parameters = [p for p in model.student.parameters() if p.requires_grad]
    if options.optimizer == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(
            parameters, lr=options.learning_rate or 0.4, momentum=0.9, weight_decay=1e-4)
    else:
        optimizer = torch.optim.Adam(parameters, lr=options.learning_rate or 1e-3,
                                     weight_decay=1e-5)
    autocast_dtype = torch.bfloat16 if options.precision == "bfloat16" else None
    device_type = torch.device(options.device).type
    generator = torch.Generator().manual_seed(options.seed)

    summary = {
        "data": str(Path(data).resolve()), "train_images": len(train_paths),
        "validation_images": len(val_paths), "seed": options.seed, "epochs": options.epochs,
        "batch_size": options.batch_size, "optimizer": options.optimizer,
        "learning_rate": optimizer.param_groups[0]["lr"], "precision": options.precision,
        "teacher_weights": str(options.teacher_weights or "packaged ImageNet weights"),
    }
    best_loss, best_epoch = math.inf, 0
    progress = tqdm(range(1, options.epochs + 1), desc="train", unit="epoch", disable=None)
    try:
        for epoch in progress:
            model.train()
            order = torch.randperm(len(train_frames), generator=generator)
            running = 0.0
            for start in range(0, len(order), options.batch_size):
                index = order[start:start + options.batch_size]
                if len(index) < 2 and len(order) > 1:
                    continue  # a batch of one breaks the student's BatchNorm
                x = model.normaliser(train_frames[index].to(options.device))
                with torch.autocast(device_type, dtype=autocast_dtype or torch.float32,
                                    enabled=autocast_dtype is not None):
                    teacher_levels, student_levels = model.features(x)
                    loss = stpm_loss(teacher_levels, student_levels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                running += float(loss.detach()) * len(index)
            train_loss = running / len(order)
            val_loss, val_scores = validate(model, val_frames, options.batch_size, options.device)
            progress.set_postfix(loss=f"{train_loss:.4f}", val=f"{val_loss:.4f}",
                                 best=best_epoch)
            log.info("epoch", epoch=epoch, train_loss=round(train_loss, 5),
                     validation_loss=round(val_loss, 5))
            if val_loss < best_loss:
                best_loss, best_epoch = val_loss, epoch
                summary.update(best_epoch=epoch, validation_loss=val_loss,
                               seconds_to_best_epoch=round(time.monotonic() - started, 1))
                save_model(out, model, calibrate(val_scores), summary)
            elif options.patience and epoch - best_epoch >= options.patience:
                log.info("early stop", epoch=epoch, best_epoch=best_epoch)
                break
    except KeyboardInterrupt:
        log.warning("interrupted", best_epoch=best_epoch, model=str(out))
        raise
    finally:
        progress.close()
    if options.calibrate_on_test:
        recalibrate_on_test(out, data, options)
    log.info("trained", model=str(out), best_epoch=best_epoch, validation_loss=best_loss,
             seconds=round(time.monotonic() - started, 1))
    return Path(out)


def recalibrate_on_test(model_dir: Path, data: Path, options: TrainOptions) -> Calibration:
    """Place the threshold at F1-max over the labelled test images of an MVTec layout."""
    from detector.inference import Inspector
    from detector.store import load_model

    model, manifest = load_model(model_dir)
    inspector = Inspector(model, manifest.calibration, options.device)
    items = test_images(data)
    scores = []
    for start in range(0, len(items), options.batch_size):
        frames = [read_image(item.path) for item in items[start:start + options.batch_size]]
        scores.append(inspector.inspect(frames).scores)
    all_scores = np.concatenate(scores)
    labels = np.array([item.label for item in items])
    calibration = calibrate(all_scores[labels == 0], all_scores[labels == 1])
    # keep the spread measured on held-out good images; only the threshold moves
    calibration = calibration.model_copy(update={"log_scale": manifest.calibration.log_scale})
    save_model(model_dir, model, calibration, manifest.training, model_id=manifest.model_id)
    return calibration
