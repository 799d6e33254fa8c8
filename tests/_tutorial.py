"""A VAE written the way Pyro's tutorial writes one (``examples/vae/vae.py``): two small
networks registered with ``pyro.module``, an *unscaled* data plate over ``x.shape[0]``, site
names ``"latent"`` and ``"obs"``, model and guide as methods of one ``nn.Module``. Only the
input width is a parameter (the tutorial hard-codes 784). Tests use it as a new user would."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn

fudge = 1e-7


class Encoder(nn.Module):
    def __init__(self, z_dim, hidden_dim, input_dim):
        super().__init__()
        self.input_dim = input_dim
        self.fc1 = nn.Linear(input_dim, hidden_dim)
        self.fc21 = nn.Linear(hidden_dim, z_dim)
        self.fc22 = nn.Linear(hidden_dim, z_dim)
        self.softplus = nn.Softplus()

    def forward(self, x):
        x = x.reshape(-1, self.input_dim)
        hidden = self.softplus(self.fc1(x))
        z_loc = self.fc21(hidden)
        z_scale = torch.exp(self.fc22(hidden))
        return z_loc, z_scale


class Decoder(nn.Module):
    def __init__(self, z_dim, hidden_dim, input_dim):
        super().__init__()
        self.fc1 = nn.Linear(z_dim, hidden_dim)
        self.fc21 = nn.Linear(hidden_dim, input_dim)
        self.softplus = nn.Softplus()
        self.sigmoid = nn.Sigmoid()

    def forward(self, z):
        hidden = self.softplus(self.fc1(z))
        return (self.sigmoid(self.fc21(hidden)) + fudge) * (1 - 2 * fudge)


class TutorialVAE(nn.Module):
    def __init__(self, z_dim=4, hidden_dim=32, input_dim=64):
        super().__init__()
        self.encoder = Encoder(z_dim, hidden_dim, input_dim)
        self.decoder = Decoder(z_dim, hidden_dim, input_dim)
        self.z_dim = z_dim
        self.input_dim = input_dim

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z_loc = x.new_zeros(torch.Size((x.shape[0], self.z_dim)))
            z_scale = x.new_ones(torch.Size((x.shape[0], self.z_dim)))
            z = pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))
            loc_img = self.decoder(z)
            pyro.sample("obs", dist.Bernoulli(loc_img, validate_args=False).to_event(1), obs=x.reshape(-1, self.input_dim))

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            z_loc, z_scale = self.encoder(x)
            pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))


def pyro_elbo(model, guide, x, *, repeats=20, seed=0):
    """Pyro's own Trace_ELBO on all rows (one full batch), per point: (mean, sd of one estimate)."""
    from pyro.infer import Trace_ELBO

    pyro.set_rng_seed(seed)
    values = []
    with torch.no_grad():
        for _ in range(repeats):
            values.append(-Trace_ELBO().loss(model, guide, x) / x.shape[0])
    t = torch.tensor(values, dtype=torch.float64)
    return float(t.mean()), float(t.std())
