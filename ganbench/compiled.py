"""``train.compile``: the D and G steps' objectives compiled with ``torch.compile``, gradient penalties included.

``torch.autograd.grad(..., create_graph=True)`` cannot be traced by torch.compile ("does not support double
backward"), so under compilation the penalties take their input gradient with ``torch.func.vjp``
(ganbench/penalties/base.py ``input_grad``): the same maths as one graph, whose backward AOTAutograd compiles
with the forward. Random draws inside the compiled region (penalty noise, instance noise) use eager's
generator (``torch._inductor.config.fallback_random``), so a compiled run draws the same numbers as an eager
one, its checkpoint's RNG state resumes exactly, and its results equal eager's to float rounding.

Compilation happens on the first step and takes tens of seconds on a CPU (it is logged with its duration),
so it pays only for long runs; it is off by default. The optimizer steps stay eager.

Inductor's on-disk caches run code when read: the FX graph and AOTAutograd caches are unpickled in full, and
compiled kernels are shared libraries loaded by name. torch keeps them in ``/tmp/torchinductor_<user>``, which
anyone on the machine can create first. ``inductor_cache`` points them at a folder only the user can write
(``${GANBENCH_CACHE:-~/.cache/ganbench}/inductor``, mode 0700, see ganbench/cachedir.py). Inductor's options
(``fallback_random``, and no precompiled headers: torch keeps those in the ``/tmp`` folder whatever the cache
folder) are passed to ``torch.compile`` for these functions only, so nothing else in the process is changed.
"""
import logging
import os
import time
from typing import Any, Callable

import torch

from ganbench.cachedir import not_private, private_dir
from ganbench.errors import GanbenchError

log = logging.getLogger("ganbench")

# Inductor config for ganbench's compiled functions only (torch applies them to their forward and lazily compiled
# backward). fallback_random: eager's random numbers (see above). cpp_cache_precompile_headers: torch writes and
# reuses precompiled headers under /tmp/torchinductor_<user> even when TORCHINDUCTOR_CACHE_DIR points elsewhere, and
# a header planted there would be compiled into every kernel.
OPTIONS = {"fallback_random": True, "cpp_cache_precompile_headers": False}


def inductor_cache(key: str = "train.compile") -> str:
    """The folder Inductor's caches live in: ``TORCHINDUCTOR_CACHE_DIR`` if set and private to the user (a
    GanbenchError naming it, and ``key``, the option that compiles, otherwise), else
    ``${GANBENCH_CACHE:-~/.cache/ganbench}/inductor`` (0700).

    The location is process-wide by torch's design: an environment variable that torch reads at every cache
    access (a backward compiled lazily at the first ``backward()``, a recompilation at any later step) and sets
    itself, to its /tmp default, when torch._dynamo is imported. So it is set here when the user has not set it
    (unset, or torch's default). Left as torch set it: Dynamo's own disk cache (``caching_precompile``, off by
    default), whose folder torch fixes at import."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    from torch._inductor.utils import clear_caches

    chosen = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    # Importing torch._dynamo sets the variable to torch's /tmp default: that value is torch's, not the user's.
    if chosen and os.path.abspath(chosen) != os.path.abspath(default_cache_dir()):
        why = not_private(chosen) if os.path.lexists(chosen) else None
        if why is not None:
            raise GanbenchError(f"{key}: TORCHINDUCTOR_CACHE_DIR={chosen} {why}: torch runs code it finds in "
                                f"its compile cache, so it must be a folder only you can write; unset it to use "
                                f"ganbench's private one")
        return chosen
    path = str(private_dir("inductor"))
    if chosen != path:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = path
        clear_caches()  # what torch's own temporary_cache_dir does on a change of folder
    log.info("%s: Inductor's cache is %s (mode 700)", key, path)
    return path


def compiled(fn: Callable[..., Any], what: str, mode: Any = True) -> Callable[..., Any]:
    """``fn`` compiled (static shapes: a run's batch never changes), with Inductor's caches in a private folder
    (``inductor_cache``), logging when its first call, which compiles it, starts and how long it took.
    ``mode`` is ``train.compile``: true, or ``reduce-overhead``, which adds CUDA graphs (Inductor's
    ``triton.cudagraphs``, what torch.compile's mode of that name sets; torch takes a mode or options, not both,
    and ganbench passes options). On the CPU CUDA graphs do not apply and torch compiles as for true."""
    inductor_cache()
    options = dict(OPTIONS, **({"triton.cudagraphs": True} if mode == "reduce-overhead" else {}))
    program = torch.compile(fn, dynamic=False, options=options)
    first = [True]

    def call(*args: Any) -> Any:
        if not first[0]:
            return program(*args)
        first[0] = False
        log.info("train.compile: compiling the %s (first call; tens of seconds on a CPU)", what)
        t = time.perf_counter()
        out = program(*args)
        log.info("train.compile: %s compiled in %.1f s", what, time.perf_counter() - t)
        return out

    return call
