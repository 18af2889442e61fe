"""``python -m mmnet.train``: see `mmnet.train.cli`."""

import sys

from mmnet.train.cli import main

sys.exit(main())
