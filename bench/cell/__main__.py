import sys

from bench.cell import main

sys.exit(main())
