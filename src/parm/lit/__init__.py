"""The only Lightning code: modules that train F (stage base) and F_P (stage parity)."""

from parm.lit.base import BaseModule
from parm.lit.parity import ParityModule
from parm.lit.progress import HostProgressBar
from parm.lit.speed import FastPath
from parm.lit.timing import ThroughputMonitor

__all__ = ["BaseModule", "FastPath", "HostProgressBar", "ParityModule", "ThroughputMonitor"]
