"""Network-namespace test lab for mxknock: switch, sender Postfix, bot, DNS, appliance, mail host.

See lab.py for the Lab class and DESIGN.md ("Test topology") for why it looks like this.
"""

from .addresses import MX_DUAL_STACK, MX_IPV4_ONLY, MX_MX1_V4_ONLY, MxHost
from .lab import Lab, missing_requirements
from .mailhost import Received
from .netns import LabError
from .probes import HeldSession, SmtpReply

__all__ = [
    "MX_DUAL_STACK",
    "MX_IPV4_ONLY",
    "MX_MX1_V4_ONLY",
    "HeldSession",
    "Lab",
    "LabError",
    "MxHost",
    "Received",
    "SmtpReply",
    "missing_requirements",
]
