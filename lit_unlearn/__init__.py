"""lit_unlearn: make trained models forget, and prove it.

Importing the package is cheap: the heavy modules (lightning, torch_geometric, xgboost) are
imported by the subpackages that need them, so `lit-unlearn --help` stays snappy.
"""

__version__ = "0.1.0"
