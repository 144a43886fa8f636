"""training.losses and training.train: margin maths, Partial FC, resume, restart, 2-rank DDP."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import PEOPLE, ROOT

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from training import data, train  # noqa: E402
from training.evaluation.pairsets import write_bin  # noqa: E402
from training.losses import CombinedMarginLoss, PartialFC  # noqa: E402
from training.models import load_model  # noqa: E402

pytestmark = pytest.mark.torch
SMOKE = ROOT / "training" / "configs" / "cpu_smoke.py"


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def people_rec(tmp_path_factory) -> Path:
    """The six fixture people, detected, aligned and packed as insightface RecordIO."""
    out = tmp_path_factory.mktemp("people_rec")
    n, k, _ = data.pack_folder(PEOPLE, out, align=True)
    assert k == 6 and n >= 16
    return out


def _rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


# --- margin loss and Partial FC ------------------------------------------------------------------
def test_cosface_and_arcface_margins_follow_their_formulas():
    cos = torch.tensor([[0.9, 0.1, -0.3], [0.2, 0.5, 0.7], [0.4, 0.4, 0.4]])
    labels = torch.tensor([0, 2, -1])  # the last row's class lives on another rank
    out = CombinedMarginLoss(64, 1.0, 0.0, 0.4)(cos.clone(), labels)
    want = cos * 64
    want[0, 0], want[1, 2] = (0.9 - 0.4) * 64, (0.7 - 0.4) * 64
    torch.testing.assert_close(out, want)
    out = CombinedMarginLoss(64, 1.0, 0.5, 0.0)(cos.clone(), labels)
    want[0, 0] = math.cos(math.acos(0.9) + 0.5) * 64
    want[1, 2] = math.cos(math.acos(0.7) + 0.5) * 64
    torch.testing.assert_close(out, want)


def test_arcface_target_logit_never_rises_as_the_angle_grows():
    c = torch.cos(torch.linspace(0, math.pi, 181))
    out = CombinedMarginLoss(1.0, 1.0, 0.5, 0.0)(c[:, None].clone(), torch.zeros(181).long())
    assert (out[1:, 0] <= out[:-1, 0] + 1e-6).all()


def test_partial_fc_with_all_centres_is_plain_cross_entropy():
    torch.manual_seed(0)
    emb = torch.randn(12, 32, requires_grad=True)
    labels = torch.randint(0, 20, (12,))
    pfc = PartialFC(CombinedMarginLoss(64, 1.0, 0.0, 0.4), 32, 20, sample_rate=1.0)
    loss = pfc(emb, labels)
    cos = F.normalize(emb) @ F.normalize(pfc.weight).T
    ref = F.cross_entropy(64 * (cos - 0.4 * F.one_hot(labels, 20)), labels)
    torch.testing.assert_close(loss, ref)
    g = torch.autograd.grad(loss, [emb, pfc.weight])
    g_ref = torch.autograd.grad(ref, [emb, pfc.weight])
    for a, b in zip(g, g_ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_partial_fc_sampling_keeps_every_positive():
    torch.manual_seed(1)
    pfc = PartialFC(CombinedMarginLoss(), 8, 100, sample_rate=0.3)
    labels = torch.tensor([3, 97, 3, 50, -1])
    index, local = pfc.sample(labels)
    assert len(index) == 30 and torch.equal(index, index.sort()[0])
    assert torch.equal(index[local[:4]], labels[:4]) and local[4] == -1


def test_class_centres_are_split_over_ranks_without_gaps():
    for classes, world in [(10, 3), (6, 2), (7, 4)]:
        shards = [PartialFC(CombinedMarginLoss(), 4, classes, 1.0, r, world) for r in range(world)]
        covered = [c for s in shards for c in range(s.class_start, s.class_start + s.num_local)]
        assert covered == list(range(classes))
        assert max(s.num_local for s in shards) - min(s.num_local for s in shards) <= 1


# --- the loop in one process -------------------------------------------------------------------
def _cfg(rec: Path, out: Path, **kw) -> object:
    return train.load_config(SMOKE, [f"rec={rec}", f"output={out}",
                                     *(f"{k}={v!r}" for k, v in kw.items())])


def _weights(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def test_resume_reaches_the_same_state_and_restart_starts_fresh(people_rec, tmp_path):
    # Uninterrupted: 7 steps (4 an epoch: crosses an epoch end), verification at steps 4 and 7.
    crops = [data.RecordDataset(people_rec, augment=False).load(i)[0] for i in range(16)]
    pairs = [c for i in range(10) for c in (crops[i], crops[i + 1])]  # 10 pairs ...
    pairs += [c for i in range(10) for c in (crops[i], crops[15 - i])]  # ... and 10 more
    same_id = [1] * 10 + [0] * 10  # (labels do not matter: only that the hook yields a figure)
    val = write_bin(tmp_path / "tiny.bin", pairs, same_id)
    full = _cfg(people_rec, tmp_path / "full", max_steps=7, val_targets=[str(val)], verbose=4)
    train.Trainer(full).fit()
    # Interrupted after 5 (mid-epoch), then resumed to 7.
    part = _cfg(people_rec, tmp_path / "part", max_steps=5)
    train.Trainer(part).fit()
    part.max_steps = 7
    train.Trainer(part).fit(resume=True)
    a = _weights(tmp_path / "full" / "checkpoint_rank0.pt")
    b = _weights(tmp_path / "part" / "checkpoint_rank0.pt")
    assert a["step"] == b["step"] == 7
    for key in ("backbone", "partial_fc"):
        for name, t in a[key].items():
            assert torch.equal(t, b[key][name]), f"{key}.{name} differs after resume"
    rows_a, rows_b = _rows(tmp_path / "full" / "log.csv"), _rows(tmp_path / "part" / "log.csv")
    assert rows_a[-1]["loss"] == rows_b[-1]["loss"]  # the steps after the resume: same losses
    vals = _rows(tmp_path / "full" / "val.csv")
    assert [v["step"] for v in vals] == ["4", "7"] and all(
        0 <= float(v["accuracy"]) <= 1 for v in vals)
    # The final backbone loads where export and evaluation load it.
    model = load_model("edgeface_xxs", tmp_path / "full" / "model.pt")
    for name, t in model.state_dict().items():
        assert torch.equal(t, a["backbone"][name])

    # Restart stage: backbone + Partial FC from "full", a fresh AdamW at lr 1e-5, epoch 100+.
    restart = _cfg(people_rec, tmp_path / "restart", init_from=str(tmp_path / "full"),
                   lr=1e-5, start_epoch=100, num_epoch=200, warmup_epoch=0, max_steps=2)
    train.Trainer(restart).fit()
    r = _weights(tmp_path / "restart" / "checkpoint_rank0.pt")
    assert r["step"] == 2
    steps = {int(s["step"]) for s in r["optimizer"]["state"].values()}
    assert steps == {2}  # the optimiser counted only the restart's steps, not 7 + 2
    row = _rows(tmp_path / "restart" / "log.csv")[-1]
    assert row["epoch"] == "100" and 0.9e-5 < float(row["lr"]) <= 1e-5
    for key in ("backbone", "partial_fc"):
        diff = max((r[key][n].float() - t.float()).abs().max().item()
                   for n, t in a[key].items() if t.is_floating_point())
        assert 0 < diff < 1e-4, f"{key}: moved {diff} in 2 steps at lr 1e-5"


def test_tensorboard_gets_the_rows_the_csv_gets(people_rec, tmp_path):
    pytest.importorskip("tensorboard", reason="pip install -e .[train]")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = _cfg(people_rec, tmp_path / "tb", max_steps=4, frequent=2)
    train.Trainer(cfg).fit()
    rows = _rows(tmp_path / "tb" / "log.csv")
    events = EventAccumulator(str(tmp_path / "tb" / "tensorboard"))
    events.Reload()
    assert {"train/loss", "train/lr", "train/images_per_s"} <= set(events.Tags()["scalars"])
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == [int(r["step"]) for r in rows] == [2, 4]
    np.testing.assert_allclose([e.value for e in loss], [float(r["loss"]) for r in rows],
                               rtol=1e-5)


def test_verification_runs_once_per_step_and_is_not_counted_as_training_time(
        people_rec, tmp_path, monkeypatch):
    # A fake clock: each training step takes 1 s, each verification 100 s.
    clock = [0.0]
    monkeypatch.setattr(train.time, "perf_counter", lambda: clock[0])
    step, verify = train.Trainer.train_step, train.Trainer.evaluate

    def timed_step(self, batches):
        clock[0] += 1.0
        return step(self, batches)

    def slow_verify(self, log):
        verify(self, log)
        clock[0] += 100.0

    monkeypatch.setattr(train.Trainer, "train_step", timed_step)
    monkeypatch.setattr(train.Trainer, "evaluate", slow_verify)
    crops = [data.RecordDataset(people_rec, augment=False).load(i)[0] for i in range(16)]
    val = write_bin(tmp_path / "tiny.bin", crops[:8] + crops[8:] + crops[:8] + crops[8:],
                             [1, 0] * 8)
    # The last step (4) is a verification step: the end of the run must not verify it again.
    cfg = _cfg(people_rec, tmp_path / "v", max_steps=4, frequent=2, verbose=2,
               val_targets=[str(val)])
    train.Trainer(cfg).fit()
    assert [v["step"] for v in _rows(tmp_path / "v" / "val.csv")] == ["2", "4"]
    # 2 steps of 4 images between rows take 2 s: 4 images/s, the 100 s of verification aside.
    rows = _rows(tmp_path / "v" / "log.csv")
    assert [(r["step"], r["images_per_s"]) for r in rows] == [("2", "4.00"), ("4", "4.00")]


def test_a_run_says_what_it_does_and_a_finished_one_says_so(people_rec, tmp_path, capsys):
    cfg = _cfg(people_rec, tmp_path / "say", max_steps=2)
    train.Trainer(cfg).fit()
    out = capsys.readouterr().out
    assert "16 images, 6 classes, 1 rank(s) x 4 images a step, 4 steps an epoch; from step 0, " \
        "to step 2" in out and "nothing to do" not in out
    assert f"step 2: model.pt, checkpoints and log.csv are in {tmp_path / 'say'}" in out
    train.Trainer(cfg).fit(resume=True)  # the same command plus --resume: already at the stop
    out = capsys.readouterr().out
    assert "resumed at step 2, to step 2" in out and "nothing to do: step 2" in out


def test_gradient_accumulation_matches_the_full_batch(people_rec, tmp_path):
    # All centres (sample_rate 1): two micro-batches of 2 are one batch of 4, up to rounding.
    whole = _cfg(people_rec, tmp_path / "whole", batch_size=4, sample_rate=1.0, max_steps=2)
    split = _cfg(people_rec, tmp_path / "split", batch_size=2, gradient_acc=2, sample_rate=1.0,
                 max_steps=2)
    train.Trainer(whole).fit()
    train.Trainer(split).fit()
    a = _weights(tmp_path / "whole" / "model.pt")["backbone"]
    b = _weights(tmp_path / "split" / "model.pt")["backbone"]
    for name, t in a.items():
        torch.testing.assert_close(b[name], t, rtol=1e-4, atol=1e-5)
    init = train.Trainer(whole).backbone.state_dict()  # and the two steps did move the weights
    assert any(not torch.allclose(init[n], t) for n, t in a.items())


def test_cli_reports_config_mistakes_in_one_line(tmp_path, capsys):
    assert train.main([str(tmp_path / "missing.py")]) == 2
    assert train.main([str(SMOKE), "learning_rate=1"]) == 2
    assert train.main([str(SMOKE), f"rec={tmp_path / 'nothing'}", f"output={tmp_path}"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("error:") for line in lines)
    assert "learning_rate" in lines[1] and "nothing" in lines[2]


# --- DDP: torchrun, 2 ranks, gloo ---------------------------------------------------------------
def _torchrun(*args: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--standalone", "-m", "training.train", str(SMOKE), *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
def test_torchrun_two_ranks_learn_shard_and_resume(people_rec, tmp_path):
    # 300 steps (2 an epoch: 8 faces a step over 16), about a minute a run on 2 cores.
    common = [f"rec={people_rec}", "frequent=25", "save_every=50", "num_epoch=150"]
    once, twice = tmp_path / "once", tmp_path / "twice"
    _torchrun(*common, f"output={once}", "max_steps=300")
    _torchrun(*common, f"output={twice}", "max_steps=151")  # stops mid-epoch
    _torchrun(*common, f"output={twice}", "max_steps=300", "--resume")

    rows = _rows(once / "log.csv")
    assert [int(r["step"]) for r in rows] == list(range(25, 301, 25))
    losses = [float(r["loss"]) for r in rows]
    assert max(losses[-4:]) < 0.1 * losses[0], f"loss did not fall: {losses}"

    shards = [_weights(once / f"checkpoint_rank{r}.pt") for r in (0, 1)]
    assert [s["class_start"] for s in shards] == [0, 3]
    w0, w1 = (s["partial_fc"]["weight"] for s in shards)
    assert w0.shape == w1.shape == (3, 512) and not torch.allclose(w0, w1)
    for name, t in shards[0]["backbone"].items():  # DDP keeps one backbone
        assert torch.equal(t, shards[1]["backbone"][name])

    resumed = [_weights(twice / f"checkpoint_rank{r}.pt") for r in (0, 1)]
    for a, b in zip(shards, resumed, strict=True):
        for key in ("backbone", "partial_fc"):
            for name, t in a[key].items():
                torch.testing.assert_close(b[key][name], t, rtol=0, atol=1e-6)
    # Logged losses are means over the steps since the last log: the window the resume cut
    # (151-175) differs by one step, every later one must be identical.
    losses_once = [r["loss"] for r in rows if int(r["step"]) > 175]
    losses_twice = [r["loss"] for r in _rows(twice / "log.csv") if int(r["step"]) > 175]
    assert len(losses_once) == 5
    np.testing.assert_allclose(np.float64(losses_twice), np.float64(losses_once), rtol=1e-5)


@pytest.mark.slow
def test_gpu_check_script_dry_runs_on_cpu(tmp_path):
    """scripts/gpu_check.sh is what a lent GPU runs first: its CPU dry run takes the same path
    (synthetic RecordIO, torchrun, XS config, resume, summary) so no GPU minutes go to a typo."""
    env = {**os.environ, "DEVICE": "cpu", "OUT": str(tmp_path / "check"), "PYTHON": sys.executable,
           "PYTHONPATH": str(ROOT), "STEPS": "4", "IMAGES": "200"}
    r = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh")], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    summary = r.stdout.strip().splitlines()[-1]
    assert summary.startswith("gpu_check: ranks=2 fp16=False steps=5 "), summary
    assert float(summary.split("images_per_s_median=")[1].split()[0]) > 0
