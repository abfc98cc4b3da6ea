import sys

from engine.backup.cli import main

sys.exit(main())
