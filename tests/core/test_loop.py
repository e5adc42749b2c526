"""The pieces both training loops share: optimizer, Ctrl-C handling, cadence, throughput."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from vqtk.recipe.schema import OptimizerSection
from vqtk.train.loop import StopFlag, Throughput, due, make_optimizer


def test_make_optimizer_is_fused_adamw_over_trainable_parameters():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    net[0].weight.requires_grad_(False)
    opt = make_optimizer(net.parameters(), OptimizerSection(lr=0.1, weight_decay=0.0))
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["fused"] is True
    assert [p for g in opt.param_groups for p in g["params"]] == [net[0].bias, net[1].weight, net[1].bias]
    reference = torch.optim.AdamW([torch.nn.Parameter(net[1].weight.detach().clone())], lr=0.1, weight_decay=0.0)
    for p in net.parameters():
        p.grad = torch.ones_like(p)
    reference.param_groups[0]["params"][0].grad = torch.ones_like(net[1].weight)
    opt.step()
    reference.step()
    torch.testing.assert_close(net[1].weight, reference.param_groups[0]["params"][0])



def test_due_runs_every_n_steps_but_not_after_the_last():
    assert [s for s in range(1, 11) if due(s, 3, 10)] == [3, 6, 9]
    assert [s for s in range(1, 11) if due(s, 5, 10)] == [5]  # step 10 is the run's own end


def test_first_ctrl_c_asks_to_stop_and_the_second_interrupts():
    previous = signal.getsignal(signal.SIGINT)
    with StopFlag() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is previous


def test_throughput_counts_since_the_last_take():
    meter = Throughput()
    meter.add(10)
    meter.add(6)
    assert meter.take() > 0 and meter.items == 0
    assert meter.take() == 0.0
