"""A naive, obviously-correct DeepAR sampler to check the vectorised one against.

It follows GluonTS's DeepARModel.forward literally: the whole scaled history is kept and
re-concatenated every step, lags are read from it, and one nn.LSTM step runs on the full
input vector. Slow, and that is the point: nothing is precomputed or reordered.
"""

from __future__ import annotations

import torch

from batchcast.forecast.model import DeepAR


@torch.inference_mode()
def naive_sample_paths(
    model: DeepAR,
    *,
    past_target: torch.Tensor,
    past_observed: torch.Tensor,
    covariates: torch.Tensor,
    cat: torch.Tensor,
    num_samples: int,
    generator: torch.Generator,
) -> torch.Tensor:
    spec, lik, s = model.spec, model.likelihood, num_samples
    params, scale, (h, c), static = model(past_target, past_observed, covariates, cat)
    rep = lambda x: x.repeat_interleave(s, dim=0)  # noqa: E731  # (B, ...) -> (B*S, ...)
    scale_r = rep(scale.scale)[:, 0]  # (B*S,)
    loc_r = None if scale.loc is None else rep(scale.loc)[:, 0]  # "std" scaling's shift

    def shifted(draw: torch.Tensor) -> torch.Tensor:
        return draw if loc_r is None else draw + loc_r

    def network_units(draw: torch.Tensor) -> torch.Tensor:
        return draw / scale_r if loc_r is None else (draw - loc_r) / scale_r

    history = rep(scale.normalize(past_target))  # (B*S, L), grows by one column per step
    static_r = rep(static)
    cov_r = rep(covariates)
    state = (h.repeat_interleave(s, dim=1), c.repeat_interleave(s, dim=1))
    draw = shifted(lik.sample(rep(params[:, -1]), scale_r, generator))
    draws = [draw]
    for k in range(1, spec.prediction_length):
        history = torch.cat((history, network_units(draw)[:, None]), dim=1)
        t = history.shape[1]  # predicting position t
        lagged = torch.stack([history[:, t - lag] for lag in spec.lags], dim=-1)
        x = torch.cat((lagged, static_r, cov_r[:, spec.context_length - 1 + k]), dim=-1)
        out, state = model.rnn(x[:, None, :], state)
        step = lik.domain_map(model.head(out[:, 0]))
        draw = shifted(lik.sample(step, scale_r, generator))
        draws.append(draw)
    return torch.stack(draws, dim=1).view(-1, s, spec.prediction_length)
