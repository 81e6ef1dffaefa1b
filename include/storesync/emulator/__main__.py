"""``python -m storesync.emulator --port 8765``"""

import sys

from storesync.emulator.server import main

sys.exit(main())
