"""litvision: image classifiers with PyTorch Lightning and Hydra."""


class UserError(ValueError):
    """Bad input from the user (config value, data folder, image file). Its message names the bad value and
    the fix; the entry point prints it alone, without a traceback."""


def instantiate(node, **kwargs):
    """Hydra's instantiate, with a UserError raised inside let through unwrapped: it needs no traceback."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate as hydra_instantiate

    try:
        return hydra_instantiate(node, **kwargs)
    except InstantiationException as e:
        if isinstance(e.__cause__, UserError):
            raise e.__cause__ from None
        raise
