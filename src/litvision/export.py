"""Export a checkpoint to ONNX, for use without litvision (onnxruntime, OpenCV, a browser, another language):
python -m litvision.export ckpt_path=PATH [output=model.onnx]

The exported graph takes float images in [0, 1], shape (batch, channels, height, width) as the checkpoint was
trained, normalizes them itself and returns logits. The class names, input shape and normalization go into the
file's metadata (`litvision` key, JSON). Needs the `export` extra: pip install -e '.[export]'.
(TorchScript, the other option, is deprecated in this torch in favour of torch.export.)
"""

import json
import logging
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from litvision import UserError, atomic_write, checkpoints, writable_output
from litvision.classifier import Classifier

log = logging.getLogger("litvision.export")


def export_onnx(ckpt_path: str, output: str) -> Path:
    path = Path(output)
    writable_output(path)
    checkpoints.load(ckpt_path)  # one clear line for a missing or bad file
    try:
        import onnx
    except ImportError as e:
        raise UserError("ONNX export needs the onnx and onnxscript packages: pip install -e '.[export]'") from e
    model = Classifier.load_from_checkpoint(ckpt_path, map_location="cpu").eval()
    hp = model.hparams
    example = torch.rand(2, *hp.input_shape)
    # the model normalizes float images in [0, 1] itself
    program = torch.onnx.export(model, (example,), dynamo=True, input_names=["images"], output_names=["logits"],
                                dynamic_shapes={"images": {0: torch.export.Dim("batch")}})
    proto = program.model_proto
    meta = {"class_names": list(hp.class_names), "input_shape": list(hp.input_shape), "mean": list(hp.mean),
            "std": list(hp.std), "input": "float images in [0, 1], (batch, channels, height, width)"}
    proto.metadata_props.add(key="litvision", value=json.dumps(meta))
    with atomic_write(path) as tmp:
        onnx.save(proto, tmp)
    return path


@hydra.main(version_base="1.3", config_path="../../conf", config_name="export")
def main(cfg: DictConfig) -> None:
    try:
        if OmegaConf.is_missing(cfg, "ckpt_path"):
            raise UserError("ckpt_path not given. Usage: python -m litvision.export ckpt_path=PATH.ckpt "
                            "[output=model.onnx]")
        path = export_onnx(cfg.ckpt_path, cfg.output)
    except UserError as e:
        log.error(f"error: {e}")
        raise SystemExit(1) from None
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
