"""llama-cpp-python's OpenAI-compatible server, with llama.cpp's extra CPU buffer types turned off.

Run it as ``python scripts/llama_server.py --model ... --port 8000``: the same flags as
``python -m llama_cpp.server``. A llama.cpp built for a CPU that reports AMX (Xeon Sapphire Rapids
and later) repacks the weights into AMX buffers, and on the virtual machines measured here the
first completion then died with a segmentation fault inside ``llama_decode``. With the extra
buffer types off (``use_extra_bufts``, which the server has no flag for) the same build answers,
and a 135M model loses nothing noticeable.
"""

from __future__ import annotations

import runpy

import llama_cpp.llama_cpp as bindings

_defaults = bindings.llama_model_default_params


def _model_params() -> bindings.llama_model_params:
    params = _defaults()
    params.use_extra_bufts = False
    return params


bindings.llama_model_default_params = _model_params  # read by llama_cpp.Llama for every model it loads
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
