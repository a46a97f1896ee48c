import sys

from jepa.cli.main import main

sys.exit(main())
