"""Content identities of step inputs and outputs (see :mod:`napari_brainorg.io._identity`)."""

from ..io._identity import FULL_HASH_LIMIT, N_SAMPLES, file_identity, key_of

__all__ = ["FULL_HASH_LIMIT", "N_SAMPLES", "file_identity", "key_of"]
