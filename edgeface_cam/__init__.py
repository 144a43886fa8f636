"""edgeface-cam: real-time on-device face recognition with EdgeFace and LiteRT.

This package is the device half: numpy, OpenCV and a LiteRT interpreter only. It never imports
torch, timm or ``training`` (a test proves it).
"""

import os

# OpenCV prints "[ERROR:...]" lines (a camera index out of range, a codec probe) from C++ that a
# user can act on none of; failures reach us as return values. OpenCV 5 is quieted after import
# (compat.quiet_opencv), but opencv-python 4.11 (the wheel pip picks with Pi OS's numpy 1.24) has
# no logging API and reads only this variable, at import. Set it yourself to see them.
os.environ.setdefault("OPENCV_LOG_LEVEL", "SILENT")

__version__ = "0.1.0"
PROG = "edgeface-cam"  # the command's name, in messages and help
