"""`geoflow train` for tests/train/test_distributed.py, with one rank killed (SIGKILL) at a given step.

Run by torchrun as a script: ``torchrun ... tests/train/_crashing_worker.py train ...``.  The rank
``GEOFLOW_TEST_CRASH_RANK`` (default 1) kills itself with SIGKILL at the start of step
``GEOFLOW_TEST_CRASH_AT``, as a machine or process failure would; torchrun then stops the others.
"""

import os
import signal
import sys

from geoflow.cli import main
from geoflow.train import Trainer

CRASH_AT = int(os.environ["GEOFLOW_TEST_CRASH_AT"])
CRASH_RANK = int(os.environ.get("GEOFLOW_TEST_CRASH_RANK", "1"))
_train_step = Trainer.train_step


def _crashing_train_step(self):
    if self.step == CRASH_AT and self.dist.rank == CRASH_RANK:
        os.kill(os.getpid(), signal.SIGKILL)
    return _train_step(self)


Trainer.train_step = _crashing_train_step

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
