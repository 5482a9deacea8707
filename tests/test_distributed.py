"""trainer=ddp_cpu: two processes over gloo, as trainer=ddp runs on GPUs."""

import json
import os
import subprocess
import sys

from conftest import FIXTURES, ROOT, make_cfg

from litvision.training import train


def test_ddp_cpu_splits_the_epoch_writes_once_and_tests_like_one_process(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    env.pop("LITVISION_DATA_DIR", None)
    done = subprocess.run([sys.executable, "train.py", "trainer=ddp_cpu", "data=mnist", "model=mlp",
                           f"paths.data_dir={FIXTURES}", f"paths.cache_dir={tmp_path / 'cache'}", "data.val_size=100",
                           "data.batch_size=32", "trainer.max_epochs=2", f"hydra.run.dir={run}",
                           "callbacks.progress_bar=null", "+callbacks.seen._target_=seen_samples.SeenSamples",
                           f"+callbacks.seen.out={tmp_path / 'seen'}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    # every one of the 400 training images once per epoch across the two processes
    seen = [json.loads((tmp_path / "seen" / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [s["world_size"] for s in seen] == [2, 2]
    assert [s["images"] for s in seen] == [200, 200]
    positions = [set(s["positions"]) for s in seen]
    assert not positions[0] & positions[1] and positions[0] | positions[1] == set(range(400))

    # decoded once, by the first process; both train from one memory map of the cache file, not a copy each
    assert [s["images_file"] for s in seen] == [str(next((tmp_path / "cache").glob("mnist-*.pt")))] * 2
    assert (done.stdout + done.stderr).count("decoded mnist cached in") == 1

    # one run folder, written by rank 0 alone: one log, one config, one metrics.json, one TensorBoard writer
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "run", "seen"]
    assert sorted(p.name for p in run.glob("*.log")) == ["train.log"]
    assert sorted(p.name for p in (run / ".hydra").iterdir()) == ["config.yaml", "hydra.yaml", "overrides.yaml"]
    assert len({p.name.split(".")[4] for p in run.glob("events.out.tfevents.*")}) == 1  # one pid
    result = json.loads((run / "metrics.json").read_text())
    assert result["images"]["test"] == 100 and len(list((run / "checkpoints").glob("*.ckpt"))) == 2

    # the accuracy the two processes logged and wrote is the one a single process finds for that checkpoint
    alone = train(make_cfg(tmp_path / "alone", "data=mnist", "trainer=cpu", "train=false",
                           f"ckpt_path={result['checkpoint']}"))
    assert alone["test/acc"] == result["accuracy"] == result["metrics"]["test/acc"]
    assert abs(alone["test/loss"] - result["metrics"]["test/loss"]) < 1e-6
