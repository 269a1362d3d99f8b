"""Find every face in images, folders and videos and put 68 keypoints on each: the command line of
the facial_keypoints package (facial_keypoints/detect.py), run from a clone.

    python detect.py                                  # scikit-image's astronaut -> outputs/astronaut.jpg
    python detect.py photo.jpg photos/ clip.mp4 --json keypoints.jsonl
    python detect.py --help

`pip install .` installs the same command as `facial-keypoints`.
"""

import sys

from facial_keypoints.detect import main

if __name__ == "__main__":
    sys.exit(main())
