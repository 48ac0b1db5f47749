import sys

from sweeper.dashboard.cli import main

sys.exit(main())
