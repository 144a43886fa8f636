"""EdgeFace-XS restart stage: reload the stage-1 backbone + Partial FC (not the optimiser),
fresh AdamW at lr 1e-5, epochs 100 to 200, no warm-up. Run it on the same number of GPUs as stage 1
(the Partial FC shards are per rank).

torchrun --nproc_per_node=4 -m training.train training/configs/edgeface_xs_gamma_06_restart.py
"""

base = "edgeface_xs_gamma_06.py"
config = dict(
    init_from="work_dirs/edgeface_xs_gamma_06",
    lr=1e-5,
    start_epoch=100,
    num_epoch=200,
    warmup_epoch=0,
    output="work_dirs/edgeface_xs_gamma_06_restart",
)
