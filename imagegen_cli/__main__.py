import sys

from imagegen_cli import main

sys.exit(main())
