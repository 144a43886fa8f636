"""EdgeFace-S (gamma 0.5): lr 6e-3, batch 1024 per GPU on 8 GPUs, WebFace12M, 100 epochs.

torchrun --nproc_per_node=8 -m training.train training/configs/edgeface_s_gamma_05.py
"""

config = dict(
    network="edgeface_s_gamma_05",
    lr=6e-3,
    batch_size=1024,
    rec="data/webface12m",
    output="work_dirs/edgeface_s_gamma_05",
    val_targets=["data/webface12m/lfw.bin", "data/webface12m/cfp_fp.bin",
                 "data/webface12m/agedb_30.bin"],
)
