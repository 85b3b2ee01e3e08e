"""The fused LSTM cell (lstm_cell.cpp): built once per machine and environment with torch.utils.cpp_extension at first
use, loaded from the build cache after that; where it cannot be built (no compiler, no ninja, a
failed build) RRN falls back to the pure-torch LSTM with one warning line.

Build cache: $TORCH_EXTENSIONS_DIR if set, else $XDG_CACHE_HOME/rrnx/extensions (~/.cache/rrnx/...).
The folder name holds a hash of the source, the flags, torch's version and this CPU's instruction
set (the build uses -march=native), and the torch installation it compiles against, so two checkouts,
two virtual environments or two machines sharing a home folder never load or rebuild each other's build,
and it compiles its own copy of the source, so checkouts of the same source in one environment share one
build; two processes building at once are serialised by torch's lock file in that folder
(the second waits, then loads the first one's build).
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
import sys
import threading
import time
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("lstm_cell.cpp")
CFLAGS = ["-O3", "-march=native", "-fno-trapping-math", "-fopenmp"]  # -fopenmp: at::parallel_for's pragmas;
# the link names no OpenMP library, so they run on torch's own runtime and thread count
MAX_REASON = 160  # characters of the build error in the warning line
STALE_LOCK_S = 600  # a lock left by a build that was killed (SIGKILL) would make torch wait forever

_lock = threading.Lock()
_state: dict = {}  # "module": the loaded extension or None after a failure; "error": why


def extensions_root() -> Path:
    configured = os.environ.get("TORCH_EXTENSIONS_DIR")
    if configured:
        return Path(configured)
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "rrnx" / "extensions"


def _cpu_signature() -> str:
    """This CPU's instruction-set flags (what -march=native compiles for)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return platform.machine() + platform.processor()


def _include_dirs() -> str:
    """The folders torch's build.ninja names (torch's headers, Python's): ninja rebuilds when they change, so two
    virtual environments sharing one build folder would each rebuild it, silently, whenever the other had run."""
    import sysconfig

    return f"{Path(torch.__file__).parent}\n{sysconfig.get_paths()['include']}"


def build_name() -> str:
    digest = hashlib.sha256()
    for part in (SOURCE.read_bytes(), " ".join(CFLAGS).encode(), torch.__version__.encode(),
                 sys.version.encode(), _cpu_signature().encode(), _include_dirs().encode()):
        digest.update(part)
    return f"rrnx_lstm_{digest.hexdigest()[:12]}"


def _build():
    from torch.utils.cpp_extension import load

    compiler = os.environ.get("CXX", "c++")  # what torch.utils.cpp_extension runs
    missing = [tool for tool in (compiler, "ninja") if shutil.which(tool) is None]
    if missing:
        raise RuntimeError(f"no {' and no '.join(missing)} on PATH")
    name = build_name()
    directory = extensions_root() / name
    directory.mkdir(parents=True, exist_ok=True)
    lock = directory / "lock"
    if lock.exists() and time.time() - lock.stat().st_mtime > STALE_LOCK_S:
        lock.unlink(missing_ok=True)
    # compile a copy kept in the build folder: ninja rebuilds when the source PATH changes, so two checkouts
    # of the same source would otherwise rebuild in turn, one of them possibly while the other loads the .so
    source = directory / SOURCE.name
    if not source.exists():
        temporary = directory / f".{SOURCE.name}.{os.getpid()}"
        temporary.write_bytes(SOURCE.read_bytes())
        os.replace(temporary, source)
    if not is_built():
        print(f"rrnx: building the fused LSTM cell in {directory} (once per machine and environment, about a minute)",
              file=sys.stderr, flush=True)
    # torch logs its own multi-line warnings about an unexpected compiler; rrnx says one line when the build fails
    torch_logger = logging.getLogger("torch.utils.cpp_extension")
    level = torch_logger.level
    torch_logger.setLevel(logging.ERROR)
    try:
        return load(name, sources=[str(source)], extra_cflags=CFLAGS, build_directory=str(directory), verbose=False)
    finally:
        torch_logger.setLevel(level)


def is_built() -> bool:
    """Whether this machine's build folder already holds the compiled cell (fused_cell() then only loads it)."""
    return any((extensions_root() / build_name()).glob(f"{build_name()}*.so"))


def fused_cell(required: bool = False):
    """The compiled extension, built at first use; None (and one warning line, once per process) when
    it cannot be built. `required`: raise instead of falling back."""
    with _lock:
        if "module" not in _state:
            try:
                _state["module"] = _build()
            except Exception as exc:  # no compiler, no ninja, a compile error, an unwritable cache folder
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                if len(reason) > MAX_REASON:  # a failed compile's first line is the whole compiler command
                    reason = reason[:MAX_REASON - 3] + "..."
                _state.update(module=None, error=f"{type(exc).__name__}: {reason}")
                if not required:
                    print(f"warning: the fused LSTM cell could not be built ({_state['error']}); using the "
                          f"pure-torch LSTM, up to 1.6x slower per epoch (docs/benchmarks.md)",
                          file=sys.stderr, flush=True)
        module = _state["module"]
    if module is None and required:
        from rrnx.errors import RrnxError
        raise RrnxError(f"lstm_kernel 'fused': the fused LSTM cell could not be built ({_state['error']}); "
                        f"install gcc, g++ and ninja, or set model.lstm_kernel to auto or torch")
    return module


def reset() -> None:
    """Forget the load result (tests simulate a failed build after a good one)."""
    with _lock:
        _state.clear()
