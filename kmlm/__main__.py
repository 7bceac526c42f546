import sys

from kmlm.cli.main import main

sys.exit(main())
