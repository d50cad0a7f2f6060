from __future__ import annotations

import logging
import os
import sys

from runner.main import main

code = main()
# The work is done: the model is freed, the socket closed and the gateway told. Leave without
# the interpreter's teardown (collecting every module and llama-cpp-python's objects, ~90 ms),
# because the gateway counts a runner's memory as free only once the process has exited.
logging.shutdown()
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)
