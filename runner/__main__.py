from __future__ import annotations

import sys

from runner.main import main

sys.exit(main())
