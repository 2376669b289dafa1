"""lit_unlearn: make trained models forget, and prove it.

Importing the package is cheap: the heavy modules (lightning, torch_geometric, xgboost) are
imported by the subpackages that need them, so `lit-unlearn --help` stays snappy.
"""

import atexit

from lit_unlearn._exit import destroy_default_process_group

__version__ = "0.1.0"

# Gloo DDP workers abort at exit when their process group is still alive (see the function).
atexit.register(destroy_default_process_group)
