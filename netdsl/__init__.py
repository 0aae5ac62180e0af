"""netdsl: one layer-description language, compiled to five frameworks and run natively."""

__version__ = "0.2.0"
