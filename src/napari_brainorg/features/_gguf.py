"""GGUF files read as far as napari-brainorg needs before transformers does: the header.

:func:`_gguf_header` walks the key-value section and the tensor descriptions (values are
skipped, not decoded), so a file cut in its header is named at once;
:func:`check_gguf_complete` compares the file's size with the tensor data its header
describes, so a file cut in its data is named too, before a conversion that would fail
deep inside transformers' reader. Re-exported by :mod:`napari_brainorg.features.models`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import ModelNotFoundError

__all__ = ["check_gguf_complete"]

#: GGUF ``general.architecture`` -> transformers ``model_type`` where they differ.
_GGUF_ARCHITECTURES = {"gpt2": "gpt2", "llama": "llama", "mistral": "mistral", "qwen2": "qwen2",
                       "qwen3": "qwen3", "gemma": "gemma", "gemma2": "gemma2", "phi3": "phi3",
                       "bert": "bert", "t5": "t5"}

_GGUF_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def _gguf_fail(path: Path, why: str) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"Cannot read the GGUF file {str(path)!r}: {why}; expected a GGUF model file as written by llama.cpp."
    )


def _gguf_header(path: Path) -> dict[str, Any]:
    """The whole header of a GGUF file: architecture, alignment and every tensor's place.

    Walks the key-value section (values are skipped, not decoded: the vocabulary's
    strings cost a seek each) and the tensor descriptions, so a file cut anywhere in its
    header is named here rather than deep inside transformers' reader.

    Returns
    -------
    dict
        ``architecture`` (transformers' ``model_type``), ``alignment`` (bytes),
        ``data_start`` (offset of the tensor data), ``tensors``: list of (name, dims,
        ggml type, offset from ``data_start``), ``size`` (the file's bytes).

    Raises
    ------
    ModelNotFoundError
        Not a GGUF file, too old a version, or a header that runs past the end of the file.
    """
    import struct

    size = path.stat().st_size
    out: dict[str, Any] = {"architecture": None, "alignment": 32, "size": size, "tensors": []}
    try:
        with open(path, "rb") as fh:
            if fh.read(4) != b"GGUF":
                raise _gguf_fail(path, "it does not start with the GGUF magic bytes")
            version, n_tensors, n_kv = struct.unpack("<IQQ", fh.read(20))
            if version < 2:
                raise _gguf_fail(path, f"GGUF version {version} is too old")

            def read(fmt: str):
                n = struct.calcsize(fmt)
                block = fh.read(n)
                if len(block) < n:
                    raise _gguf_fail(path, f"its header runs past the end of the file ({size} bytes): it is "
                                           "truncated or damaged")
                return struct.unpack(fmt, block)

            def read_str() -> str:
                (n,) = read("<Q")
                if n > size - fh.tell():
                    raise _gguf_fail(path, f"a string of {n} bytes runs past the end of the file ({size} bytes): "
                                           "it is truncated or damaged")
                return fh.read(n).decode("utf-8", errors="replace")

            def skip(value_type: int) -> None:
                if value_type in _GGUF_SCALAR_SIZES:
                    fh.seek(_GGUF_SCALAR_SIZES[value_type], 1)
                elif value_type == 8:
                    (n,) = read("<Q")
                    fh.seek(n, 1)
                elif value_type == 9:
                    item_type, count = read("<IQ")
                    if item_type in _GGUF_SCALAR_SIZES:
                        fh.seek(_GGUF_SCALAR_SIZES[item_type] * count, 1)
                    else:
                        for _ in range(count):
                            skip(item_type)
                else:
                    raise _gguf_fail(path, f"unknown value type {value_type}")
                if fh.tell() > size:
                    raise _gguf_fail(path, f"its header runs past the end of the file ({size} bytes): it is "
                                           "truncated or damaged")

            for _ in range(n_kv):
                key = read_str()
                (value_type,) = read("<I")
                if key == "general.architecture" and value_type == 8:
                    arch = read_str()
                    out["architecture"] = _GGUF_ARCHITECTURES.get(arch, arch)
                elif key == "general.alignment" and value_type == 4:
                    (out["alignment"],) = read("<I")
                else:
                    skip(value_type)
            for _ in range(n_tensors):
                name = read_str()
                (n_dims,) = read("<I")
                dims = read(f"<{n_dims}Q")
                ggml_type, offset = read("<IQ")
                out["tensors"].append((name, dims, ggml_type, offset))
            align = out["alignment"] or 32
            out["data_start"] = -(-fh.tell() // align) * align
    except ModelNotFoundError:
        raise
    except (OSError, struct.error, UnicodeError) as exc:
        raise _gguf_fail(path, f"{type(exc).__name__}: {exc}") from None
    if out["architecture"] is None:
        raise _gguf_fail(path, "its header has no 'general.architecture'")
    return out


def _gguf_architecture(path: Path) -> str:
    """``general.architecture`` from a GGUF header (:func:`_gguf_header`, which checks it is whole)."""
    return _gguf_header(path)["architecture"]


def check_gguf_complete(path: str | os.PathLike) -> None:
    """The GGUF file holds every byte its header promises (a cut in the tensor data is named).

    Raises
    ------
    ModelNotFoundError
        Naming the file, its size and the size its header needs.
    """
    import math

    path = Path(path)
    header = _gguf_header(path)
    try:
        from gguf.constants import GGML_QUANT_SIZES
    except ImportError:  # transformers needs gguf to read the file; it says so itself
        return
    end = header["data_start"]
    for name, dims, ggml_type, offset in header["tensors"]:
        try:
            block, type_size = GGML_QUANT_SIZES[ggml_type]
        except (KeyError, ValueError):
            continue  # a tensor type this gguf does not know: transformers will say
        end = max(end, header["data_start"] + offset + math.prod(dims) // block * type_size)
    if header["size"] < end:
        raise _gguf_fail(path, f"it has {header['size']:,} bytes and its header describes {end:,}: it is truncated "
                               "(an interrupted download or copy)")
