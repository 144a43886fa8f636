"""Defaults for every training config: the official EdgeFace recipe (see REFERENCE.md).

A config file holds ``config = dict(...)`` with the keys it changes, and may name the file it
builds on with ``base = "other.py"`` (this file is always the root). Any key can also be set on
the command line: ``python -m training.train CONFIG lr=1e-3 batch_size=128``.
"""

config = dict(
    # model and loss
    network="edgeface_xs_gamma_06",  # a name from training.models.list_models()
    embedding_size=512,
    margin_list=(1.0, 0.0, 0.4),  # (m1, m2, m3): CosFace, as the official configs
    scale=64.0,  # s
    sample_rate=0.3,  # Partial FC: share of each rank's class centres used per step
    # data
    rec="data/webface12m",  # folder with train.rec + train.idx, or one sub-folder per identity
    align=False,  # image folders of raw photos: detect + align the largest face on the fly
    num_classes=None,  # None: from the data (RecordIO header or number of folders)
    augment=True,  # flip, down-scale, blur, hue/saturation, greyscale (training.data.augment)
    num_workers=4,  # DataLoader workers per rank
    # optimisation
    optimizer="adamw",
    lr=3e-3,
    weight_decay=0.05,
    batch_size=512,  # per GPU (per rank)
    gradient_acc=1,  # micro-batches per optimiser step
    num_epoch=100,  # the stage ends at this epoch
    start_epoch=0,  # the stage starts here (the restart stage: 100)
    warmup_epoch=2,  # linear warm-up, then polynomial decay to 0 at num_epoch
    lr_power=1.0,  # polynomial decay power (1: linear)
    clip_grad_norm=5.0,  # of the backbone's gradient; None: no clipping
    fp16=False,  # automatic mixed precision (GPU only)
    seed=2048,
    # restart stage: output folder of the stage to reload backbone + Partial FC from (not the
    # optimiser); None starts from random weights
    init_from=None,
    # output, logging, evaluation
    output="work_dirs/edgeface",
    frequent=10,  # steps between log rows (CSV, TensorBoard, progress bar)
    save_every=2000,  # steps between checkpoints (one is also written at every epoch end)
    verbose=2000,  # steps between verification runs on val_targets
    val_targets=[],  # insightface .bin files or pairs TSVs (paths) for verification accuracy
    max_steps=None,  # stop (with a checkpoint) after this many steps of the stage: smoke tests
)
