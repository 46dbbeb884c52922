"""Reads a Paddle state dict file without running code from it.

``paddle.load`` unpickles ``.pdparams`` files with Python's full unpickler: a crafted checkpoint
runs whatever it names. A state dict needs only numpy arrays in a dict, so this reader allows
exactly the numpy classes ``paddle.save`` pickles arrays with (as ``torch.load(weights_only=True)``
does for torch) and refuses anything else with a :class:`CheckpointError`. ``model.safetensors``
(PaddleNLP's safe serialization) is read with safetensors.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

from conversion.errors import CheckpointError

# (module, name) pairs a pickled dict of numpy arrays refers to (numpy 1.x and 2.x spellings)
_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("collections", "OrderedDict"),
}
_SPLIT_KEY = "UnpackBigParamInfor@@"  # paddle.save's marker for tensors saved in slices


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not part of a state dict")
        return super().find_class(module, name)


def read_paddle_state(path: Path) -> dict[str, object]:
    """The arrays of ``model_state.pdparams`` (or ``model.safetensors``), never running its code."""
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        try:
            return dict(load_file(str(path)))
        except Exception as e:  # safetensors' own error types: truncated, bad header
            raise CheckpointError(f"{path} is not a readable safetensors file ({type(e).__name__})") from e
    try:
        with path.open("rb") as f:
            state = _ArraysOnly(io.BufferedReader(f), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise CheckpointError(
            f"{path} is not a plain state dict of arrays ({e})",
            "save it with paddle.save(model.state_dict(), ...) or as model.safetensors",
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a state dict", "save model.state_dict()")
    if _SPLIT_KEY in state:
        raise CheckpointError(
            f"{path} holds tensors saved in slices (over 4 GB)", "save it as model.safetensors instead"
        )
    return dict(state)
