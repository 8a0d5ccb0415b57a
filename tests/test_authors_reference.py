"""The authors' procedure kept as a timing reference (benchmarks/authors.py): it runs, each
network gets the updates the authors' batch gives it, and its inner step is the project's
inner step with the authors' settings (so the benchmark compares the same method)."""
import torch

from benchmarks.authors import AuthorsProcedure
from benchmarks.vs_authors import fa_vs_plain, project_settings
from fa_utils import models, vfa


def small_reference():
    torch.manual_seed(0)
    with models.scaled_architectures(1 / 16):
        return AuthorsProcedure("mnist", latent_dim=8, num_classes=10)


def steps_taken(opt):
    return {int(s["step"]) for s in opt.state.values()}


def test_the_reference_procedure_runs_and_updates_every_network():
    ref = small_reference()
    before = {name: [p.detach().clone() for p in m.parameters()]
              for name, m in (("E", ref.encoder), ("G", ref.generator), ("D", ref.discriminator))}
    x, y = torch.rand(4, 1, 28, 28), torch.tensor([0, 3, 9, 3])
    logs = ref.full_batch(x, y)
    assert set(logs) == {"loss_e", "loss_g", "loss_d_real", "loss_d_fake"}
    assert all(torch.isfinite(torch.tensor(v)) for v in logs.values()), logs
    for name, m in (("E", ref.encoder), ("G", ref.generator), ("D", ref.discriminator)):
        assert any(not torch.equal(a, b) for a, b in zip(before[name], m.parameters())), name
    # one encoder and one G update, two D updates per batch; the clamp of Eq. 9 holds
    assert steps_taken(ref.opt_e) == {1} and steps_taken(ref.opt_g) == {1}
    assert steps_taken(ref.opt_d) == {2}
    ref.vfa_step(x, y)
    assert steps_taken(ref.opt_e) == {2}
    assert all(m.weight.abs().max() <= 2 ** 0.5 for m in ref.encoder.modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))


def test_the_reference_inner_step_is_ours_with_the_authors_settings():
    """sigmoid(r - grad cost) from B zero starts on mu + sigma and the class head equals
    vfa's inner problem with rand_side='mu+sigma', squash='sigmoid' (taken from one shared
    start) within fp32 rounding."""
    ref = small_reference()
    z = torch.randn(5, 8, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([1, 0, 7, 7, 2])
    y = ref._one_hot(labels)
    theirs = ref.inner_step(z, y, (1, 28, 28)).detach()
    settings = project_settings(True)
    ours = vfa.decode(ref.encoder, z, (1, 28, 28), settings=settings, labels=labels)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_fa_versus_plain_step_reports_both_times():
    with models.scaled_architectures(1 / 16):
        row = fa_vs_plain("mnist", torch.device("cpu"), repeats=1)
    assert row[0] == "mnist" and row[1] > 0 and row[2] > 0
    assert abs(row[3] - row[1] / row[2]) < 1e-9
    assert 1.5 < row[5] < 3  # the FA step does about twice the arithmetic of a plain step
