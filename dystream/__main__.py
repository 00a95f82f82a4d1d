import sys

from dystream.cli import main

sys.exit(main())
