"""Lightning callbacks litvision adds to a run: test figures for TensorBoard (figures), an exponential moving
average of the weights (ema), airbench's lookahead weight averaging (lookahead), Optuna's pruning inside a search
(pruning)."""
