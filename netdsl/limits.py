"""Resource limits: hostile or mistaken input must fail before memory is touched.

Each limit can be raised through an environment variable of the same name in
upper case with a NETDSL_ prefix (for example NETDSL_MAX_LAYERS=200000).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields


@dataclass
class Limits:
    max_source_bytes: int = 1_000_000
    max_tokens: int = 300_000  # words, numbers and symbols in one file: bounds the time to parse it
    max_nesting: int = 100
    max_expr_depth: int = 400
    max_layers: int = 100_000
    max_stack_repeat: int = 100_000
    max_params: int = 2_000_000_000
    max_call_depth: int = 50  # nested block and lambda calls
    max_dim: int = 100_000_000
    max_eval_depth: int = 1_000  # nested evaluation, across calls; the Python stack is sized from it
    max_eval_steps: int = 1_000_000  # evaluation steps in one file (3-20 per layer): stops exponential blow-ups
    max_errors: int = 100  # diagnostics reported before the front end stops
    max_nodes: int = 300_000  # layer applications (a shared layer applied twice is two)
    max_group_depth: int = 100  # Sequential/LayerStack/'>>' composites nested in each other
    max_fixed_weights_bytes: int = 1 << 31  # one Embedding(weights=...) array, as its .npz header declares it

    @classmethod
    def from_env(cls, env=os.environ) -> "Limits":
        lim = cls()
        for f in fields(cls):
            raw = (env.get("NETDSL_" + f.name.upper()) or "").strip().replace("_", "")
            # ASCII digits only: str.isdigit() also accepts "²", which int() refuses (at import time)
            if raw.isascii() and raw.isdigit():
                setattr(lim, f.name, int(raw))
        return lim


LIMITS = Limits.from_env()
