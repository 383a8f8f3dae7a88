from neurohorizon.cli import main
import sys

sys.exit(main())
