"""Native optimizers step for step against real torch.optim."""

import io

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from netdsl.exec import optim  # noqa: E402

TOL = 1e-6

CONFIGS = [
    ("SGD", dict(lr=0.1), {}),
    ("SGD", dict(lr=0.1, momentum=0.9), dict(momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True), dict(momentum=0.8, nesterov=True)),
    ("Adam", dict(), {}),
    ("Adam", dict(lr=0.01, beta1=0.8, beta2=0.99, eps=1e-6), dict(betas=(0.8, 0.99), eps=1e-6)),
    ("Adadelta", dict(), {}),
    ("Adadelta", dict(lr=0.5, rho=0.8, eps=1e-5), dict(rho=0.8, eps=1e-5)),
]


def make_problem(seed=0):
    rng = np.random.default_rng(seed)
    params = {"conv.W": rng.standard_normal((2, 3, 2, 2)).astype(np.float32),
              "dense.b": rng.standard_normal(4).astype(np.float32)}
    grads = [{k: rng.standard_normal(v.shape).astype(np.float32) for k, v in params.items()}
             for _ in range(3)]
    return params, grads


def torch_twin(name, ours_kwargs, torch_extra, params):
    tparams = {k: torch.nn.Parameter(torch.tensor(v.copy())) for k, v in params.items()}
    lr = ours_kwargs.get("lr", {"SGD": None, "Adam": 1e-3, "Adadelta": 1.0}[name])
    opt = getattr(torch.optim, name)(list(tparams.values()), lr=lr, **torch_extra)
    return tparams, opt


def torch_step(tparams, topt, grads):
    for k, p in tparams.items():
        p.grad = torch.tensor(grads[k])
    topt.step()


def assert_params_equal(params, tparams):
    for k, v in params.items():
        ref = tparams[k].detach().numpy()
        err = np.abs(v - ref).max()
        assert err <= TOL, f"{k}: max abs error {err:.3g}"


def roundtrip_npz(sd):
    """Through np.savez/np.load, as a checkpoint would store it."""
    buf = io.BytesIO()
    np.savez(buf, **sd)
    buf.seek(0)
    with np.load(buf) as f:
        return {k: f[k] for k in f.files}


@pytest.mark.parametrize("name,kwargs,torch_extra", CONFIGS)
def test_matches_torch_over_three_steps(name, kwargs, torch_extra):
    params, grads = make_problem()
    tparams, topt = torch_twin(name, kwargs, torch_extra, params)
    opt = getattr(optim, name)(**kwargs)
    for g in grads:
        opt.step(params, g)
        torch_step(tparams, topt, g)
        assert_params_equal(params, tparams)
        assert all(v.dtype == np.float32 for v in params.values())


@pytest.mark.parametrize("name,kwargs,torch_extra", CONFIGS)
def test_state_dict_round_trip(name, kwargs, torch_extra):
    params, grads = make_problem(1)
    tparams, topt = torch_twin(name, kwargs, torch_extra, params)
    opt = getattr(optim, name)(**kwargs)
    for g in grads[:2]:
        opt.step(params, g)
        torch_step(tparams, topt, g)
    sd = opt.state_dict()
    for v in sd.values():
        assert np.isscalar(v) or isinstance(v, np.ndarray)
    saved = {k: np.copy(v) for k, v in sd.items()}
    # A fresh optimizer built with other hyperparameters takes them from the checkpoint.
    other = dict(kwargs, lr=123.0)
    resumed = getattr(optim, name)(**other)
    resumed.load_state_dict(roundtrip_npz(sd))
    assert resumed.lr == opt.lr
    resumed.step(params, grads[2])
    torch_step(tparams, topt, grads[2])
    assert_params_equal(params, tparams)
    # The state dict is a snapshot: stepping on did not change it.
    for k, v in saved.items():
        np.testing.assert_array_equal(sd[k], v)


def test_missing_gradient_leaves_parameter_alone():
    params, grads = make_problem()
    before = params["dense.b"].copy()
    opt = optim.Adam(lr=0.1)
    opt.step(params, {"conv.W": grads[0]["conv.W"], "dense.b": None})
    np.testing.assert_array_equal(params["dense.b"], before)
    assert "step/dense.b" not in opt.state_dict()


def test_bad_arguments():
    with pytest.raises(ValueError, match="nesterov"):
        optim.SGD(lr=0.1, nesterov=True)
    opt = optim.SGD(lr=0.1)
    with pytest.raises(ValueError, match="shape"):
        opt.step({"w": np.zeros(3, np.float32)}, {"w": np.zeros(4, np.float32)})
    with pytest.raises(KeyError):
        opt.load_state_dict({"bogus": 1.0})
