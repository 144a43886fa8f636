"""edgeface-cam: real-time on-device face recognition with EdgeFace and LiteRT.

This package is the device half: numpy, OpenCV and a LiteRT interpreter only. It never imports
torch, timm or ``training`` (a test proves it).
"""

__version__ = "0.1.0"
PROG = "edgeface-cam"  # the command's name, in messages and help
