"""The verification run behind ``python -m training.evaluate``, one idea a module.

``pairsets``: the pair-set readers (insightface ``.bin``, the LFW layout, pair TSVs, landmarks).
``backends``: aligned crops -> embeddings (a torch checkpoint, an exported ``.tflite``).
``embedding``: finding each image's face, embedding every image once, the on-disk cache.
``scoring``: pair scores and extra impostor pairs. ``run``: one pair set with one model.
``report``: the printed figures and the JSON summary. Open set (``--openset``):
``identities`` (identity-labelled sets and the fixed calibration / held-out split) and
``openset`` (DIR and FPIR over random galleries at the auto threshold). The CLI is
``training/evaluate.py``; the card's calibration is ``training/calibrate.py``.
"""


class EvalError(ValueError):
    """A user mistake (bad path, malformed pair file): reported as one line, no traceback."""
