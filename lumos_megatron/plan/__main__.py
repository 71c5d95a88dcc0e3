"""``python -m lumos_megatron.plan``: see ``lumos_megatron.plan.cli``."""

import sys

from lumos_megatron.plan.cli import main

sys.exit(main())
