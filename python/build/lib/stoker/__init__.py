"""stoker: batches from object storage in shared memory, for PyTorch.

`Client` talks to the node's stoker daemon (`stoker serve`); `stoker.torch`
has the `StokerDataset` for DataLoader / StatefulDataLoader.
"""

from .client import DEFAULT_SOCKET, Batch, Client, Column, Loader
from .errors import StokerError

__all__ = ["Batch", "Client", "Column", "DEFAULT_SOCKET", "Loader", "StokerError"]
__version__ = "0.1.0"
