"""Data sources: each dataset's official files parsed into the two raw tables.

See :mod:`lit_unlearn.datamodules.schema` for the tables and
:class:`~lit_unlearn.datamodules.sources.base.DataSource` for the interface.
:class:`Synthetic` is the embedded default: a deterministic generator, no files.
"""

from lit_unlearn.datamodules.schema import DataFormatError
from lit_unlearn.datamodules.sources.base import DataNotFoundError, DataSource
from lit_unlearn.datamodules.sources.generic import GenericTable
from lit_unlearn.datamodules.sources.lastfm import LastFM1K, LastFM360K
from lit_unlearn.datamodules.sources.modcloth import ModCloth
from lit_unlearn.datamodules.sources.movielens import MovieLens1M, MovieLens100K
from lit_unlearn.datamodules.sources.synthetic import Synthetic

__all__ = [
    "DataFormatError",
    "DataNotFoundError",
    "DataSource",
    "GenericTable",
    "LastFM1K",
    "LastFM360K",
    "ModCloth",
    "MovieLens1M",
    "MovieLens100K",
    "Synthetic",
]
