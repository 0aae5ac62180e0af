"""The seeded combinations of train-block settings (issue 18) every test of training settings draws from.

tests/test_train_settings.py checks the native executor against PyTorch on them;
tests/test_conformance_steps.py and each target's tests/test_train_<target>.py run them through
`netdsl conformance --steps`. Import these, don't copy them: the combinations must stay the same.
"""
from __future__ import annotations

import random

MODEL = """model Settings
x = Input(6)
h = Dense(5, activation=tanh)(x)
y = Dense(3)(h)
output y
train {
%s
}
"""

OPTIMIZERS = [
    "SGD(lr=0.1)", "SGD(lr=0.05, momentum=0.9)", "SGD(lr=0.05, decay=0.01, momentum=0.9, nesterov=True)",
    "SGD(lr=0.1, decay=0.05)", "Adam(lr=0.01)", "AdamW(lr=0.01, weight_decay=0.1)",
    "RMSProp(lr=0.01)", "RMSProp(lr=0.005, rho=0.9, momentum=0.5, centered=True)",
    "RMSProp(lr=0.01, eps_inside_sqrt=True)", "Adadelta(lr=1.0)", "Adagrad(lr=0.1)",
    "Adagrad(lr=0.1, initial_accumulator=0.1)",
]
SCHEDULES = [None, "step(step_size=5, gamma=0.5, unit=step)", "exponential(gamma=0.8)",
             "piecewise(boundaries=[4, 12], factors=[1, 0.5, 0.1], unit=step)",
             "cosine(t_max=15, eta_min=0.001, unit=step)", "step(step_size=1, gamma=0.7)"]
REGULARISERS = [None, "weight_decay = l2(0.01)", "weight_decay = decoupled(0.05)", "clip_norm = 0.5",
                "clip_value = 0.05", "weight_decay = l2(0.02)\n    clip_norm = 1.0", "lr_unit = sample"]
LOSSES = ["cross_entropy_with_softmax", "squared_error", "squared_error(reduction=sum)", "l2",
          "binary_cross_entropy_with_logits", "cross_entropy_with_softmax(reduction=sum)"]


def combinations(n: int, seed: int) -> list:
    rng = random.Random(seed)
    out = set()
    while len(out) < n:
        opt = rng.choice(OPTIMIZERS)
        reg = rng.choice(REGULARISERS)
        if opt.startswith("AdamW") and reg and "decoupled" in reg:  # refused: AdamW's decay is decoupled
            continue
        out.add((opt, rng.choice(SCHEDULES), reg, rng.choice(LOSSES)))
    return sorted(out, key=str)


def block(opt, schedule, reg, loss) -> str:
    lines = [f"optimizer = {opt}", f"loss = {loss}", "batch_size = 8"]
    if schedule:
        lines.append(f"lr_schedule = {schedule}")
    if reg:
        lines.append(reg)
    return "\n".join("    " + line for line in lines)
