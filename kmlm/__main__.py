import sys

from kmlm.cli import main

sys.exit(main())
