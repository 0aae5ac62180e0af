"""The Keras-style CNN's native test accuracy per epoch, for several (Adam lr, batch, seed) settings.

    PYTHONPATH=. NETDSL_DATA=../shared/data .venvs/main/bin/python bench/keras_cnn_seeds.py 0.0015,64,0 0.002,64,1

Full MNIST, one BLAS thread, the training block of models/keras_cnn.net with only lr and batch replaced
(bench/RESULTS.md, "Keras-style CNN, native, 2 epochs").
"""
import re
import sys
import time
from pathlib import Path

from netdsl import data as datamod
from netdsl.exec import runtime, train
from netdsl.exec.weights import init_params
from netdsl.frontend import load_text

runtime.set_threads(1)
mnist = datamod.load_mnist("mnist")
source = (Path(__file__).resolve().parent.parent / "models" / "keras_cnn.net").read_text()
for spec in sys.argv[1:]:
    lr, batch, seed = spec.split(",")
    text = re.sub(r"Adam\(lr=[0-9.]+\)", f"Adam(lr={lr})", source)
    text = re.sub(r"batch_size = \d+", f"batch_size = {batch}", text)
    graph = load_text(text, "keras_cnn.net")
    t0 = time.time()
    trainer = train.Trainer(graph, init_params(graph, int(seed)), mnist,
                            train.Options(seed=int(seed), progress=False), log=lambda s: None)
    result = trainer.fit()
    print(spec, [round(h["test_accuracy"] * 100, 2) for h in result.history], f"{time.time() - t0:.0f}s", flush=True)
