"""EdgeFace-XS (gamma 0.6): lr 3e-3, batch 512 per GPU on 4 GPUs, WebFace12M, 100 epochs.

torchrun --nproc_per_node=4 -m training.train training/configs/edgeface_xs_gamma_06.py
"""

config = dict(
    network="edgeface_xs_gamma_06",
    lr=3e-3,
    batch_size=512,
    rec="data/webface12m",
    output="work_dirs/edgeface_xs_gamma_06",
    val_targets=["data/webface12m/lfw.bin", "data/webface12m/cfp_fp.bin",
                 "data/webface12m/agedb_30.bin"],
)
