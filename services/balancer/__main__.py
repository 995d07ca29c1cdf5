"""`python -m services.balancer`: run the balancer service until SIGTERM."""

import sys

from services.balancer.bootstrap import bootstrap
from services.balancer.settings import BalancerSettings
from shared.certs import check_pair
from shared.lifecycle import service_main
from shared.settings import load_settings


def load() -> BalancerSettings:
    """Settings from QUICFLEET_* variables, with the certificate checked before anything starts.

    A half-configured certificate is a settings error: `service_main` prints its one line and
    exits 2, as for any bad variable.
    """
    settings = load_settings(BalancerSettings)
    check_pair(settings.tls_cert, settings.tls_key)
    return settings


def main() -> int:
    """Entry point: settings, then serve."""
    return service_main("balancer", load, bootstrap)


if __name__ == "__main__":
    sys.exit(main())
