from __future__ import annotations

import logging
import os
import sys

# numpy, which llama-cpp-python imports, starts OpenBLAS's thread pool, and its threads spin for
# a while after they start (~0.2 s of CPU here) and after every BLAS call numpy makes. The
# runner computes with llama.cpp's threads and needs none of them (a user's setting still wins).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

if sys.platform.startswith("linux"):  # before llama.cpp's libraries load: see runner.stdcxx
    from runner.stdcxx import load_stdcxx_first

    load_stdcxx_first()

if "--quiet-start" in sys.argv:  # a spare started beside a busy model: see runner.quiet
    from runner.quiet import import_quietly

    import_quietly(sys.argv[1:])

from runner.main import main

code = main()
# The work is done: the model is freed, the socket closed and the gateway told. Leave without
# the interpreter's teardown (collecting every module and llama-cpp-python's objects, ~90 ms),
# because the gateway counts a runner's memory as free only once the process has exited.
logging.shutdown()
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)
