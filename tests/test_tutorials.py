"""The tutorials reproduced on the full real datasets (../shared/datasets): long, so marked slow.

pytest -m slow   (about 4 minutes on 2 CPU cores)"""

import pytest

from conftest import SHARED, needs_shared
from litvision.training import train

pytestmark = [pytest.mark.slow, needs_shared()]


def test_tutorial_mnist_reaches_the_notebooks_accuracy(cfg_factory):
    metrics = train(cfg_factory("experiment=tutorial_mnist", data_dir=SHARED))
    assert metrics["test/acc"] >= 0.945  # the notebook's loop measured 95.7% on this data


def test_tutorial_cifar10_reaches_the_tutorials_accuracy(cfg_factory):
    metrics = train(cfg_factory("experiment=tutorial_cifar10", data_dir=SHARED))
    assert metrics["test/acc"] >= 0.52  # the tutorial's loop measured 54.7% on this data (52-56% published)
