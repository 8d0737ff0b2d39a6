"""Content identities of files: what a step read and what it wrote.

- :func:`file_identity` is the content identity of an input or output file: the SHA-256
  of the whole file up to :data:`FULL_HASH_LIMIT` bytes; beyond it, the size, the
  modification time and the SHA-256 of :data:`N_SAMPLES` evenly spaced 1 MiB blocks
  (first and last included). A step's key hashes these identities with every option it
  uses, so overwriting an input at the same path recomputes the step (Snakemake/DVC).
- A step's stamp (``OUT/.cache/<step>.json``) records its key and the identities of
  the files it wrote; a file changed since then (a same-size corruption included)
  makes the step run again, with a :class:`~napari_brainorg.errors.CacheMismatchWarning`
  naming the file; :meth:`~napari_brainorg.io.results.ResultFolder.verify` checks the same
  stamps when a folder is opened.
- The run lock lives with the result folder's other state in
  :mod:`napari_brainorg.io.results` (:class:`~napari_brainorg.io.results.RunLock`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

#: files up to this size are hashed whole; larger ones by size, mtime and sampled blocks
FULL_HASH_LIMIT = 256 * 1024 * 1024
#: blocks of 1 MiB hashed for files above the limit
N_SAMPLES = 16
_BLOCK = 1 << 20

# (path, size, mtime_ns, ctime_ns, inode) -> identity: a file is hashed once per process
_memo: dict[tuple, str] = {}


def file_identity(path: str | os.PathLike) -> str:
    """Content identity of a file: ``"sha256:<hex>"``, or ``"sampled:<size>:<mtime_ns>:<hex>"``
    for files larger than :data:`FULL_HASH_LIMIT`.

    Parameters
    ----------
    path : path-like
        An existing file.
    """
    path = Path(path)
    st = path.stat()
    memo_key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    limit = FULL_HASH_LIMIT
    if memo_key in _memo:
        return _memo[memo_key]
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        if st.st_size <= limit:
            for block in iter(lambda: fh.read(_BLOCK), b""):
                digest.update(block)
            ident = f"sha256:{digest.hexdigest()}"
        else:
            step = (st.st_size - _BLOCK) / (N_SAMPLES - 1)
            for i in range(N_SAMPLES):
                fh.seek(int(round(i * step)))
                digest.update(fh.read(_BLOCK))
            ident = f"sampled:{st.st_size}:{st.st_mtime_ns}:{digest.hexdigest()}"
    _memo[memo_key] = ident
    return ident


def key_of(*parts) -> str:
    """A short stable hash of JSON-able ``parts`` (options, upstream keys, identities)."""
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


