"""NeuronMap: capture transformer activations into a Zarr lake, find them in a DuckDB catalog, analyse them.

import neuronmap
nm = neuronmap.connect()            # $NEURONMAP_TARGET or 127.0.0.1:50051
run = nm.extract("smollm2_135m", ["Paris is the capital of"], points=["blocks.5.resid_post"])
run.array("blocks.5.resid_post")    # numpy [tokens, 576]
"""

from neuronmap.client import Client, Run, Statistics, connect
from neuronmap.errors import NeuronMapError

__all__ = ["Client", "NeuronMapError", "Run", "Statistics", "connect"]
