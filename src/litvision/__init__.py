"""litvision: image classifiers with PyTorch Lightning and Hydra."""


class UserError(ValueError):
    """Bad input from the user (config value, data folder, image file). Its message names the bad value and
    the fix; the entry point prints it alone, without a traceback."""
