"""Lightning callbacks litvision adds to a run: test figures for TensorBoard (figures), airbench's lookahead
weight averaging (lookahead), Optuna's pruning inside a search (pruning)."""
