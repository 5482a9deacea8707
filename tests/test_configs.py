"""Every option of every config group composes, and what it names instantiates."""

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from conftest import FIXTURES, ROOT
from litvision.datamodule import ImageBatches
from litvision.training import build_model, resolve_precision

GROUPS = ("data", "model", "optimizer", "scheduler", "trainer", "logger", "callbacks", "experiment", "hparams_search")
OPTIONS = [(group, path.stem) for group in GROUPS for path in sorted((ROOT / "conf" / group).glob("*.yaml"))]
DATA_FOR = {"image_folder": [f"data.root={FIXTURES / 'cifar10-jpeg'}"],
            # a photo folder of the user's; torchvision's weights cannot be downloaded here
            "finetune_photos": [f"data.root={FIXTURES / 'cifar10-jpeg'}", "model.weights=null", "data.image_size=32"]}
NOT_IN_FIXTURES = ("cifar100", "emnist", "fashion_mnist", "kmnist", "svhn", "stl10")  # see test_datasets.py


def test_every_group_has_options():
    assert {group for group, _ in OPTIONS} == set(GROUPS)


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_and_instantiates(cfg_factory, tmp_path, group, option):
    extra, where = DATA_FOR.get(option, []), {}
    if option == "streaming":  # chunks written from the image-folder fixture
        from litvision.streaming import write_chunks

        write_chunks(FIXTURES / "cifar10-jpeg", str(tmp_path / "chunks"))
        extra, where = [f"data.input_dir={tmp_path / 'chunks'}"], {"data_dir": tmp_path}
    cfg = cfg_factory(f"{group}={option}", *extra, "trainer.max_epochs=1", **where)
    OmegaConf.resolve(cfg)  # every interpolation resolves
    datamodule = instantiate(cfg.data, _convert_="all")
    assert isinstance(datamodule, ImageBatches)
    if group == "data" and option in NOT_IN_FIXTURES:  # their loading is tested on tiny files of their own format
        assert datamodule.dataset == option
        return
    datamodule.prepare_data()
    datamodule.setup()
    model = build_model(cfg, datamodule)  # network, optimizer and scheduler are built here
    assert model.hparams.input_shape == datamodule.input_shape
    if cfg.trainer.accelerator == "gpu":  # no GPU here: check what would be asked of one
        assert cfg.trainer.devices == 1 or cfg.trainer.strategy == "ddp"
        return
    callbacks = [instantiate(node) for node in cfg.callbacks.values() if node] if cfg.callbacks else []
    loggers = [instantiate(node) for node in cfg.logger.values() if node] if cfg.logger else []
    resolve_precision(cfg)  # trainer.precision=auto: what this hardware trains in
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    assert trainer.max_epochs >= 1 and cfg.trainer.precision in ("32-true", "bf16-mixed", "16-mixed")


def test_defaults_are_the_tutorial_stack(cfg_factory):
    cfg = cfg_factory()
    assert cfg.data.dataset == "cifar10"
    assert cfg.model._target_ == "litvision.nets.LeNet"
    assert cfg.optimizer._target_ == "torch.optim.SGD"
    assert cfg.trainer.accelerator == "auto"
    assert "tensorboard" in cfg.logger
    assert cfg.callbacks.model_checkpoint.monitor == "val/acc" and cfg.callbacks.last_checkpoint.filename == "last"
    assert cfg.callbacks.early_stopping is None


@pytest.mark.parametrize("override", ["trainer.accelerator=gpu", "trainer=gpu", "trainer=cpu", "trainer.devices=2"])
def test_accelerator_is_a_plain_override(cfg_factory, override):
    cfg = cfg_factory(override)
    key, value = override.split("=")
    if key == "trainer":
        assert cfg.trainer.accelerator == value
    else:
        assert str(OmegaConf.select(cfg, key)) == value


def test_tutorial_experiments_match_the_tutorials(cfg_factory):
    for name, dataset, net in [("tutorial_cifar10", "cifar10", "LeNet"), ("tutorial_mnist", "mnist", "MLP")]:
        cfg = cfg_factory(f"experiment={name}")
        assert cfg.data.dataset == dataset and cfg.model._target_ == f"litvision.nets.{net}"
        assert cfg.data.batch_size == 4 and cfg.trainer.max_epochs == 2
        assert (cfg.optimizer.lr, cfg.optimizer.momentum) == (0.001, 0.9)
        assert list(cfg.data.mean) == [0.5] and list(cfg.data.std) == [0.5]
        assert not cfg.scheduler
    assert list(cfg_factory("experiment=tutorial_mnist").model.hidden) == [120, 256]


def test_slurm_launcher_config_names_partition_gpus_and_time():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "trainer=ddp",
                                          "trainer.devices=4", "hydra.launcher.gpus_per_node=4"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.partition, launcher.gpus_per_node, launcher.timeout_min) == ("gpu", 4, 60)
    assert cfg.trainer.strategy == "ddp" and cfg.trainer.devices == 4


def test_the_lightning_module_is_its_own_config_node_holding_network_optimizer_and_schedule(cfg_factory):
    cfg = cfg_factory("model=mlp", "model.hidden=[32]", "optimizer=adam", "scheduler=cosine",
                      "classifier.label_smoothing=0.1")
    node = OmegaConf.to_container(cfg.classifier, resolve=True)
    assert node["_target_"] == "litvision.classifier.Classifier"
    assert node["net"] == OmegaConf.to_container(cfg.model, resolve=True)  # model= picks the network inside it
    assert node["optimizer"]["_target_"] == "torch.optim.Adam" and node["scheduler"]["interval"] == "epoch"
    datamodule = instantiate(cfg.data, _convert_="all")
    model = build_model(cfg, datamodule)
    hp = model.hparams
    assert hp.label_smoothing == 0.1 and hp.net["hidden"] == [32] and hp.class_names == datamodule.class_names
    assert (hp.input_shape, hp.mean, hp.std) == (datamodule.input_shape, datamodule.mean, datamodule.std)
    assert all(type(value) in (dict, list) for value in (hp.net, hp.optimizer, hp.scheduler, hp.mean))  # plain data


@pytest.mark.parametrize(("precision", "widths", "epochs", "batch", "lr", "least", "flip", "muon_lr"),
                         [("bf16-mixed", ([64, 256, 256],) * 2, (5, 14), 1024, 1.5, (5, 10), True, None),
                          ("32-true", ([32, 128, 128], [48, 192, 192]), (10, 30), 256, 0.375, (1, 5), "alternate",
                           0.1)])
def test_the_rungs_are_airbench_sized_to_the_precision_and_the_time(cfg_factory, precision, widths, epochs, batch, lr,
                                                                    least, flip, muon_lr):
    """With AMX (bf16) the full network where it trains enough epochs in the time, else half its widths; without it
    (float32) half its widths in batches of 256 at the same lr per image, and for 15 minutes three quarters with Muon
    and the alternating flip (in bf16 Muon without muon_lr: SGD's steps); the epochs fitted to each rung's time."""
    airbench, five, fifteen = (OmegaConf.to_container(cfg_factory(f"experiment={name}", f"trainer.precision={precision}"),
                                                      resolve=True)
                               for name in ("cifar10_airbench", "cifar10_ladder_5min", "cifar10_ladder_15min"))
    half = {"model.widths": [32, 128, 128], "data.batch_size": 256, "optimizer.lr": 0.375}
    for cfg, minutes, width, most, fewest in zip((five, fifteen), (5, 15), widths, epochs, least):
        assert cfg["model"].pop("widths") == width and cfg["classifier"]["net"].pop("widths") == width
        assert (cfg["data"].pop("batch_size"), cfg["optimizer"].pop("lr"), cfg["trainer"].pop("max_epochs")) == (
            batch, lr, most)
        cfg["classifier"]["optimizer"].pop("lr")
        assert (cfg.pop("tune"), cfg["trainer"].pop("max_time")) == ("epochs", f"00:00:{minutes:02d}:00")
        first, second = cfg.pop("time_choices")
        assert first == {"least_epochs": fewest}
        assert second["set"] == half | {"trainer.max_epochs": {5: 10, 15: 30}[minutes]}
    assert fifteen["data"].pop("flip") == flip and five["data"].pop("flip") is True
    muon = {"_target_": "litvision.muon.Muon", "muon_lr": muon_lr, "muon_momentum": 0.6, "ns_steps": 3}
    for node in (fifteen["optimizer"], fifteen["classifier"]["optimizer"]):
        assert {key: node.pop(key) for key in muon} == muon
        node["_target_"] = "torch.optim.SGD"
    assert airbench["classifier"]["optimizer"].pop("lr") == airbench["optimizer"].pop("lr") == 1.5
    assert airbench["data"].pop("batch_size") == 1024 and airbench.pop("tune") is None
    assert airbench.pop("time_choices") is None and airbench["trainer"].pop("max_time") is None
    airbench["data"].pop("flip")
    for cfg in (airbench, five, fifteen):
        cfg["paths"] = cfg["paths"] | {"output_dir": ""}
        cfg["trainer"].pop("max_epochs", None)
        for node in (cfg["model"], cfg["classifier"]["net"]):
            node.pop("widths", None)
    assert five == fifteen == airbench


def test_the_optuna_searches_share_one_base(cfg_factory):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfgs = {name: compose("train", overrides=[f"hparams_search={name}", "paths.root_dir=/r"], return_hydra_config=True)
                for name in ("mnist_optuna", "cifar10_optuna")}
        plain = compose("train", return_hydra_config=True)
    assert plain.hydra.sweeper._target_.endswith("GridSweeper") and "optuna_pruning" not in plain.callbacks
    for name, cfg in cfgs.items():
        assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper") and cfg.hydra.sweeper.study_name == name
        assert cfg.hydra.sweep.dir.endswith(f"search/{name}") and cfg.callbacks.optuna_pruning.trial is None
