"""Test-only methods that inject faults into a cell (installed on a path by tests/conftest.py)."""

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.methods.base import MethodConfig
from bench.methods.full import FullFineTune


@dataclass
class SlowOptions(MethodConfig):
    step_sleep_s: float = 0.5
    marker: str = ""


class FaultOom(FullFineTune):
    name = "fault-oom"

    def apply(self, model):
        import torch

        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (simulated)")


class FaultSleep(FullFineTune):
    """Hangs forever, with a grandchild process that must be killed too."""

    name = "fault-sleep"
    config_cls = SlowOptions

    def apply(self, model):
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
        if self.config.marker:
            Path(self.config.marker).write_text(str(proc.pid))
        while True:
            time.sleep(1)


class FaultSlow(FullFineTune):
    """Trains normally but sleeps after each step; writes `marker` when training has begun."""

    name = "fault-slow"
    config_cls = SlowOptions

    def after_optimizer_step(self, model, step):
        if self.config.marker:
            Path(self.config.marker).write_text(str(os.getpid()))
        time.sleep(self.config.step_sleep_s)

    def apply(self, model):
        return super().apply(model)


class FaultCrash(FullFineTune):
    name = "fault-crash"

    def apply(self, model):
        sys.stderr.write("about to crash hard\n")
        sys.stderr.flush()
        os._exit(7)


class FaultPatch(FullFineTune):
    """Monkeypatches a library function and leaks a global: the next cell must not see either."""

    name = "fault-patch"

    def apply(self, model):
        import bench.scoring

        bench.scoring.accuracy = lambda preds, refs: -1.0
        bench.scoring.LEAKED = True
        return super().apply(model)


class FaultCheck(FullFineTune):
    """Fails if an earlier cell's patch or leaked global is visible."""

    name = "fault-check"

    def apply(self, model):
        import bench.scoring

        if getattr(bench.scoring, "LEAKED", False) or bench.scoring.accuracy.__name__ != "accuracy":
            raise RuntimeError("state leaked from an earlier cell")
        return super().apply(model)


class FaultStray(FullFineTune):
    """Starts a daemon (double fork + setsid: it leaves the cell's process group and tree) and trains normally."""

    name = "fault-stray"
    config_cls = SlowOptions

    def apply(self, model):
        code = (
            "import os, sys, time\n"
            "if os.fork(): sys.exit(0)\n"
            "os.setsid()\n"
            "open(sys.argv[1] + '.tmp', 'w').write(str(os.getpid()))\n"
            "os.replace(sys.argv[1] + '.tmp', sys.argv[1])\n"
            "time.sleep(3600)\n"
        )
        subprocess.run([sys.executable, "-c", code, self.config.marker], check=True)
        while not Path(self.config.marker).exists():
            time.sleep(0.01)
        return super().apply(model)


class FaultLinger(FullFineTune):
    """Writes its (successful) result, then never exits."""

    name = "fault-linger"

    def apply(self, model):
        from bench.results.rundir import RunDir

        original = RunDir.write_result

        def write_then_hang(self, data):
            original(self, data)
            time.sleep(3600)

        RunDir.write_result = write_then_hang
        return super().apply(model)


class FaultBadsave(FullFineTune):
    """Trains normally; its checkpoint save fails."""

    name = "fault-badsave"

    def save(self, model, out_dir):
        raise OSError(28, "No space left on device")
