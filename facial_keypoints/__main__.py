"""`python -m facial_keypoints ...`: the command line of `facial-keypoints` and `python detect.py`."""

import sys

from facial_keypoints.detect import main

sys.exit(main())
