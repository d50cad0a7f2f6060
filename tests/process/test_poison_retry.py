"""A request whose runner dies under it is not sent to another runner: it may be what killed
the first (a "poison" request), and would then kill the second too. Real
``python -m runner --engine fake:…`` children behind the real Supervisor.

(A runner that dies while loading is still started once more, and one killed by a CPU fault in
its first decode still gets one retry in CPU mode plain: ``tests/e2e/test_shutdown.py``,
``tests/e2e/test_cpu_mode.py``.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from power.errors import RunnerCrashedError
from power.supervisor import Supervisor
from tests.support.spawn import Spawner, alive, collect, gen, model, params, settings
from tests.support.wait import wait_for

pytestmark = pytest.mark.anyio


async def test_a_request_that_kills_its_runner_fails_and_is_not_sent_to_a_second(
    tmp_path: Path,
) -> None:
    # the first runner dies as the request is admitted, before it produced anything; a second
    # runner would answer it
    spawn = Spawner("fake:echo?crash_before=1", "fake:echo")
    m = model(tmp_path)
    async with Supervisor.open(settings(tmp_path), spawn=spawn) as sup:
        with pytest.raises(RunnerCrashedError, match="crash before the first token") as info:
            await collect(sup.request(m, params(m), None, gen("poison")))
        assert info.value.pid == spawn.pids[0]
        assert spawn.count == 1  # no second runner was started for it
        await wait_for(lambda: not sup.loaded())
        assert not alive(spawn.pids[0])

        # the next request is served by a fresh runner
        text, _ = await collect(sup.request(m, params(m), None, gen("still here")))
        assert text == "still here "
        assert spawn.count == 2
