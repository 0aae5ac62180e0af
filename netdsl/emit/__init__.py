"""Code generation: one module per target, each a table from layer kind to emitter.

TARGETS maps a --target name to the module that defines `TARGET`; modules are
imported on demand so a target's helpers never load for another target.
"""
TARGETS = {
    "pytorch": "netdsl.emit.pytorch",
    "keras": "netdsl.emit.keras",
    "tf-estimator": "netdsl.emit.tf_estimator",
    "gluon": "netdsl.emit.gluon",
    "cntk": "netdsl.emit.cntk",
}
