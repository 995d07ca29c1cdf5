"""`python -m services.balancer`: run the balancer service until SIGTERM."""

import sys

from services.balancer.bootstrap import bootstrap
from services.balancer.settings import BalancerSettings
from shared.lifecycle import service_main
from shared.settings import load_settings


def main() -> int:
    """Entry point: settings from QUICFLEET_* variables, then serve."""
    return service_main("balancer", lambda: load_settings(BalancerSettings), bootstrap)


if __name__ == "__main__":
    sys.exit(main())
