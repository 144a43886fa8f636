"""A tiny CPU run to check an install end to end (minutes on 2 cores): EdgeFace-XXS on the six
people of the shared fixtures, packed first with

python -m training.data pack ../shared/fixtures/people work_dirs/smoke_data --align
torchrun --nproc_per_node=2 -m training.train training/configs/cpu_smoke.py
"""

config = dict(
    network="edgeface_xxs",
    rec="work_dirs/smoke_data",
    batch_size=4,
    lr=1e-3,
    sample_rate=0.5,
    num_epoch=60,
    warmup_epoch=1,
    num_workers=0,
    frequent=5,
    save_every=50,
    verbose=0,
    val_targets=[],
    output="work_dirs/cpu_smoke",
)
