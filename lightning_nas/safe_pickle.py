"""Reading the pickles that data formats are made of (CIFAR's python batches, NATS-Bench's ``.pickle.pbz2``)
without running code from them: only plain containers and numpy arrays are rebuilt, and any other global a file
names (``os.system``, a class with ``__reduce__``, ...) is refused before it is looked up.

``pickle.load`` on a file from a mirror runs whatever the file says; these formats need nothing beyond
``dict``/``list``/``bytes`` and numpy's array reconstruction, so everything else is an error naming the global.
"""

from __future__ import annotations

import io
import pickle
from typing import IO, Any

#: the globals the formats' official files name (numpy arrays and scalars, ordered dicts, py2 byte strings)
ALLOWED = {
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),   # arrays pickled with protocol 5
    ("numpy._core.numeric", "_frombuffer"),
}


class UnsafePickleError(pickle.UnpicklingError):
    """The file names a global outside ``ALLOWED``: it could run code, so it is not read."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED:
            raise UnsafePickleError(f"the file names {module}.{name}, which a data file never needs (it could run "
                                    "code): not read")
        return super().find_class(module, name)


def load(f: IO[bytes], encoding: str = "ASCII") -> Any:
    """``pickle.load`` restricted to plain containers and numpy arrays."""
    return _RestrictedUnpickler(f, encoding=encoding).load()


def loads(blob: bytes, encoding: str = "ASCII") -> Any:
    """``pickle.loads`` restricted to plain containers and numpy arrays."""
    return load(io.BytesIO(blob), encoding=encoding)
