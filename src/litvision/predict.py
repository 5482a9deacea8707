"""Classify image files with a checkpoint: python -m litvision.predict ckpt_path=PATH inputs=DIR_OR_FILE [top_k=3]

The checkpoint alone says how (class names, input size and channels, normalization): no data or training config.
Images of any size and format are converted and resized as the model was trained. Prints the top-k classes with
their probabilities per image and writes them to a CSV; a file that is not a readable image is reported there and
skipped, and the rest are still classified.
"""

import csv
import logging
import os
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from litvision import UserError, atomic_write, checkpoints, writable_output
from litvision.classifier import Classifier
from litvision.decoding import IMAGE_EXTENSIONS, read_image

log = logging.getLogger("litvision.predict")


def predict(ckpt_path: str, inputs: list[str], top_k: int = 3, batch_size: int = 256,
            device: str = "cpu") -> list[dict]:
    """One row per file: path, then classes and probabilities best first, or the error that made it skip."""
    for key, value in (("top_k", top_k), ("batch_size", batch_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UserError(f"{key}={value!r} is invalid: it must be a positive integer, e.g. {key}=3")
    check_device(device)
    checkpoints.load(ckpt_path)  # one clear line for a missing or bad file
    model = Classifier.load_from_checkpoint(ckpt_path, map_location=device).eval()
    hp = model.hparams
    channels, size = hp.input_shape[0], tuple(hp.input_shape[1:])
    top_k = min(top_k, len(hp.class_names))
    rows, images, paths = [], [], []
    for path in _files(inputs):
        try:
            images.append(read_image(path, channels, size))
        except UserError as e:
            rows.append({"path": path, "error": str(e)})
            continue
        paths.append(path)
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch = torch.stack(images[start:start + batch_size]).to(device)
            probabilities = model(batch).float().softmax(1)  # uint8, as in training
            values, indices = probabilities.topk(top_k, dim=1)
            for path, p, i in zip(paths[start:start + batch_size], values.tolist(), indices.tolist()):
                rows.append({"path": path, "classes": [hp.class_names[c] for c in i], "probabilities": p})
    return sorted(rows, key=lambda row: row["path"])


def _files(inputs: list[str]) -> list[str]:
    """Files as given, and every file under a given folder whose extension is an image format's."""
    files = []
    for entry in inputs:
        if os.path.isdir(entry):
            files += [os.path.join(folder, name) for folder, _, names in os.walk(entry) for name in names
                      if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS]
        elif os.path.exists(entry):
            files.append(entry)
        else:
            raise UserError(f"inputs: {entry} does not exist: give image files or folders of them")
    if not files:
        raise UserError(f"inputs={inputs} holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
    return files


def check_device(device: str) -> None:
    try:
        torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise UserError(f"device={device!r} is not a device: use cpu or cuda") from e
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device={device}: this machine has no CUDA GPU that torch can use; use device=cpu")


def write_csv(rows: list[dict], path: Path, top_k: int) -> None:
    header = ["path"] + [f"{kind}_{k}" for k in range(1, top_k + 1) for kind in ("class", "probability")] + ["error"]
    with atomic_write(path) as tmp, tmp.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        for row in rows:
            ranked = [v for c, p in zip(row.get("classes", []), row.get("probabilities", [])) for v in (c, f"{p:.6f}")]
            writer.writerow([row["path"], *ranked, *[""] * (2 * top_k - len(ranked)), row.get("error", "")])


@hydra.main(version_base="1.3", config_path="../../conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    try:
        missing = [key for key in ("ckpt_path", "inputs") if OmegaConf.is_missing(cfg, key)]
        if missing:
            raise UserError(f"{' and '.join(missing)} not given. Usage: python -m litvision.predict "
                            "ckpt_path=PATH.ckpt inputs=DIR_OR_FILE [top_k=3] [output=predictions.csv]")
        inputs = [cfg.inputs] if isinstance(cfg.inputs, str) else list(cfg.inputs)
        output = Path(cfg.output)
        writable_output(output)
        rows = predict(cfg.ckpt_path, inputs, cfg.top_k, cfg.batch_size, cfg.device)
    except UserError as e:
        log.error(f"error: {e}")
        raise SystemExit(1) from None
    top_k = max((len(row.get("classes", [])) for row in rows), default=cfg.top_k)
    for row in rows:
        if "error" in row:
            log.warning(f"skipped {row['error']}")
        else:
            ranked = ", ".join(f"{c} {100 * p:.1f}%" for c, p in zip(row["classes"], row["probabilities"]))
            print(f"{row['path']}: {ranked}")
    write_csv(rows, output, top_k)
    print(f"{sum('error' not in r for r in rows)} images classified, {sum('error' in r for r in rows)} skipped; "
          f"wrote {output}")


if __name__ == "__main__":
    main()
