from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

ROOT = Path(__file__).parents[1]
FIXTURES = Path(__file__).parent / "fixtures"
SHARED = ROOT.parent / "shared" / "datasets"


def make_cfg(out: Path, *overrides: str, data_dir: Path = FIXTURES) -> DictConfig:
    """The composed train config as `python train.py OVERRIDES` would see it, writing under `out`, reading
    data from the committed fixtures (300 train images a dataset: a fifth for validation), with no progress
    bar (pytest captures output anyway)."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=[
            f"paths.root_dir={ROOT}", f"paths.data_dir={data_dir}", f"paths.output_dir={out}",
            f"paths.cache_dir={out.parent / 'cache'}",
            "++callbacks.progress_bar=null", *(["data.val_size=0.2"] if data_dir == FIXTURES else []), *overrides])


@pytest.fixture
def cfg_factory(tmp_path):
    def factory(*overrides: str, out: str = "run", data_dir: Path = FIXTURES) -> DictConfig:
        return make_cfg(tmp_path / out, *overrides, data_dir=data_dir)

    return factory


@pytest.fixture(autouse=True)
def _no_data_dir_env(monkeypatch):
    """Tests choose their data folder explicitly, whatever LITVISION_DATA_DIR says."""
    monkeypatch.delenv("LITVISION_DATA_DIR", raising=False)


def needs_shared():
    return pytest.mark.skipif(not SHARED.is_dir(), reason=f"full datasets not found at {SHARED}")

