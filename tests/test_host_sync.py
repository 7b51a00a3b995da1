"""No step waits for the device (issue 26): ``HostSyncCounter`` over real steps of every family's tiny config.

The counter treats the module's parameters, buffers, optimizer state and the batch as device tensors and follows
them through every op (backward included), so these CPU runs catch what would stall a GPU: ``.item()``,
``float(t)``, ``if t:``, ``.tolist()``, ``.cpu()``, boolean masks, ``nonzero``. A read the algorithm needs is
declared with ``host_read`` and bounded here per method.
"""

from __future__ import annotations

import json

import pytest
import torch
from cli_utils import run_in_process
from conftest import REPO

from lightning_nas.callbacks.host_sync import _CatchHostReads, _PropagateAndCatch, _Tracker
from lightning_nas.core.host_reads import host_read
from tests.probes import RecordedHostSyncs

TINY = REPO / "experiments" / "tiny"
COUNTER = json.dumps([{"class_path": "tests.probes.RecordedHostSyncs"}])

# config, extra arguments, declared reads per step (None: only at the method's decision steps, checked below)
FAMILIES = [
    ("darts_nb201", (), 0),                   # bilevel, first order
    ("darts2_nb201", (), 0),                  # second order: the finite-difference radius stays on the device
    ("sdarts_adv_nb201", (), 0),              # the attack's fallback is a torch.where, not an if
    ("beta_darts_nb201", (), 0),
    ("milenas_nb201", (), 0),
    ("pc_darts_nb201", (), 0),
    ("snas_nb201", (), 0),
    ("drnas_nb201", (), 0),                   # Dirichlet samples drawn on the device
    ("na_darts_nb201", (), 1),                # the strongest ops, once per architecture step
    ("gdas_nb201", (), 2),                    # the drawn ops, once per sample (weight step, architecture step)
    ("single_path_nb201", (), 0),
    ("di_nas_nb201", (), 0),
    ("na_rs_nb201", (), 0),
    ("teacher_nb201", (), 0),                 # training a cell
    ("saep", (), None),                       # selection and pruning at the iteration's last step
    ("rea_nb201", (), None),                  # a discrete search reads each cell's score
]


@pytest.mark.parametrize("config, args, per_step", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_no_undeclared_host_sync_inside_a_step(config, args, per_step, tmp_path, capsys):
    run_in_process("fit", "--config", str(TINY / f"{config}.yaml"), "--run.root", str(tmp_path),
                   "--trainer.max_epochs", "2" if config.startswith("rea") else "1", "--trainer.callbacks", COUNTER,
                   *args, capsys=capsys)
    counter = RecordedHostSyncs.last
    assert counter is not None and counter.steps_checked >= 3
    assert not counter.undeclared, "host syncs inside a step:\n" + counter.summary()
    steps: dict[int, int] = {}
    for e in counter.events:
        steps[e.step] = steps.get(e.step, 0) + 1
    if per_step is not None:
        assert all(n == per_step for n in steps.values()) and len(steps) == (counter.steps_checked if per_step else 0)
    elif config == "saep":  # only where an iteration ends: its last step
        assert len(steps) == 1, counter.summary()


def _watched(fn):
    tracker = _Tracker()
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    tracker.mark([w])
    with _CatchHostReads(tracker), _PropagateAndCatch(tracker):
        fn(w)
    return tracker.events


@pytest.mark.parametrize("read", [
    lambda w: (w * 2).sum().item(),
    lambda w: float(w.detach().sum()),
    lambda w: bool((w > 0).all()),
    lambda w: (w + 1).tolist(),
    lambda w: w.detach().cpu(),
    lambda w: w[w > 0],
    lambda w: torch.nonzero(w),
    lambda w: torch.autograd.grad((w ** 2).sum(), w)[0].sum().item(),  # through the backward pass
], ids=["item", "float", "bool", "tolist", "cpu", "boolean-mask", "nonzero", "backward"])
def test_the_counter_sees_every_kind_of_host_read(read):
    assert len(_watched(read)) >= 1


def test_the_counter_ignores_host_tensors_device_asserts_and_declared_reads():
    g = torch.Generator().manual_seed(0)

    def free(w: torch.Tensor) -> None:
        int(torch.randint(5, (1,), generator=g))          # a host generator's draw stays on the host
        noise = torch.rand(3, generator=g)
        float(noise.sum())
        torch.nn.functional.one_hot(w.detach().abs().long(), 4)  # on CUDA a device assert, not a read

    assert _watched(free) == []

    def declared(w: torch.Tensor) -> None:
        with host_read("the test's reason"):
            w.sum().item()

    assert [e.declared for e in _watched(declared)] == ["the test's reason"]


def test_ddp_ranks_agree_on_a_stop_signal_every_n_steps_not_every_step(tmp_path):
    """The ranks' agreement on a signal is an all-reduce the host waits for: after every n-th step (never after an
    epoch's last, whose validation comes first) and at each later epoch's start, not after each step."""
    from types import SimpleNamespace

    from lightning_nas.checkpointing import GracefulStop

    asked: list[int] = []
    strategy = SimpleNamespace(reduce_boolean_decision=lambda stop, all: asked.append(1) or stop)
    trainer = SimpleNamespace(world_size=2, num_training_batches=25, strategy=strategy)
    stop = GracefulStop(str(tmp_path), "resume", ddp_every_n_steps=10)
    for batch_idx in range(25):
        stop.on_train_batch_end(trainer, None, None, None, batch_idx)
    assert len(asked) == 2  # after steps 10 and 20
    stop.on_train_epoch_start(trainer, None)  # the first epoch: nothing ended before it
    stop.on_train_epoch_end(trainer, None)
    stop.on_train_epoch_start(trainer, None)
    assert len(asked) == 3
    for batch_idx in range(25):  # the count goes on over the epochs: steps 30 and 40 (5 + 10 + 10)
        stop.on_train_batch_end(trainer, None, None, None, batch_idx)
    assert len(asked) == 5
