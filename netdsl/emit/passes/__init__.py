"""Per-target analyses of the graph, one named pass per file.

Each pass is a function of an explicit context (common.GraphIndex, or legacy.Legacy for the legacy
targets) that returns plain data for its emitter; none keeps state between calls.

- keras_flatten.flatten_modes: Keras, the feature order of each flattened NHWC image
- lstm_fusion.fused_lstms: Keras, LSTMs that return only their last state
- nhwc_flatten.flatten_orders / dense_rows: tf-estimator, NHWC-ordered flattens and the Dense rows they permute
"""
