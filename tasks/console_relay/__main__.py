"""``python -m tasks.console_relay``: run this node's console relay (see ``tasks.console_relay.daemon``)."""

import sys

from tasks.console_relay.daemon import main

sys.exit(main())
