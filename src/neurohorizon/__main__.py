import sys

from neurohorizon.cli import main

sys.exit(main())
