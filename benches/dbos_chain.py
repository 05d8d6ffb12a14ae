"""The peer of `ca-a2a-flow run` on a chain of no-op steps: one DBOS workflow
whose N steps each do nothing, checkpointed in the system database named by the
first argument (sqlite:///PATH or postgresql://...). Run as a whole process,
as a user runs it; scripts/compare-dbos.sh times it side by side with ours."""

import sys

from dbos import DBOS, DBOSConfig

url, steps = sys.argv[1], int(sys.argv[2])
config: DBOSConfig = {"name": "chain", "system_database_url": url, "log_level": "ERROR"}
DBOS(config=config)


@DBOS.step()
def noop(i: int) -> int:
    return i


@DBOS.workflow()
def chain(n: int) -> int:
    for i in range(n):
        noop(i)
    return n


DBOS.launch()
assert chain(steps) == steps
DBOS.destroy()
