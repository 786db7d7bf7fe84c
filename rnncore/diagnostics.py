"""Gradient-flow diagnostics: how far back in time the gradient reaches, and why.

The vanishing/exploding-gradient picture, measured on the user's own model:

- ``record_grad_norms(model)`` turns on, in every recurrent layer of ``model`` (rnncore.nn.RNN,
  LSTM, GRU, or any Module holding them), the engine's own bookkeeping: the next backward sets
  ``layer.grad_norms``, float64 (L*D, T, B), the norm ||dL/dh_t|| of every layer, direction,
  step and sequence, summed up inside the C++ BPTT sweep (no extra pass; 0 past a sequence's
  length). ``grad_norms(model)`` collects them by layer path.
- ``distance_profile(norms, lengths)``: the mean over sequences of ||dL/dh_t|| against the
  distance k = (last step - t) back from each sequence's own last step (a reverse direction
  counts from t = 0), the curve whose slope shows vanishing (falls off) or exploding (grows).
- ``recurrent_spectra(model)``: spectral radius and largest singular value of each W_hh
  (per gate block; with projections of the H x H recurrence W_h{gate} W_hr).
- ``plot_profiles(profiles, path)``: those curves on a log scale, as a PNG (needs matplotlib).
- ``plot_attention(alpha, source_tokens, target_tokens, path)``: an attention heat-map (T, S) of
  one sentence pair, as a PNG (needs matplotlib).

Shape letters: T time steps, B batch, L layers, D directions, H hidden size, G gates.
"""
import numpy as np

from ._checks import as_lengths, shape_str
from .nn.rnn import RNNBase

__all__ = ["recurrent_layers", "record_grad_norms", "grad_norms", "distance_profile", "recurrent_spectra",
           "plot_profiles", "plot_attention"]

_GATES = {"lstm": "ifgo", "gru": "rzn", "rnn_tanh": "h", "rnn_relu": "h"}


def recurrent_layers(model):
    """[(path, layer)] of every recurrent layer in ``model`` (the model itself if it is one)."""
    if isinstance(model, RNNBase):
        return [("", model)]
    if not hasattr(model, "named_modules"):
        raise TypeError(f"recurrent_layers: model must be an rnncore.nn Module, got {type(model).__name__}")
    return [(path, m) for path, m in model.named_modules() if isinstance(m, RNNBase)]


def record_grad_norms(model, enabled=True):
    """Make every recurrent layer of ``model`` record ||dL/dh_t|| on its next backwards (or stop,
    ``enabled=False``). Returns the [(path, layer)] affected; raises if there is none."""
    layers = recurrent_layers(model)
    if not layers:
        raise ValueError(f"record_grad_norms: {type(model).__name__} has no recurrent layer (RNN, LSTM, GRU)")
    for _, layer in layers:
        layer.record_grad_norms = bool(enabled)
        if not enabled:
            layer.grad_norms = None
    return layers


def grad_norms(model):
    """{path: layer.grad_norms} of the recurrent layers whose last backward recorded them."""
    return {path: layer.grad_norms for path, layer in recurrent_layers(model) if layer.grad_norms is not None}


def distance_profile(norms, lengths=None, reverse=False):
    """Mean ||dL/dh_t|| against the distance back in time from each sequence's last step.

    norms: (T, B) one layer-direction's norms (e.g. ``layer.grad_norms[k]``), or (T,).
    lengths: (B,) the sequences' lengths (None: all T). reverse: a reverse direction, whose
    last step is t = 0. Returns (distance (K,), mean (K,)), K = max length: mean[k] is the
    average over the sequences with length > k of ||dL/dh_{len-1-k}|| (reverse: ||dL/dh_k||).
    """
    fn = "distance_profile"
    a = np.asarray(norms, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"{fn}: norms must have shape (T, B) or (T,), got {shape_str(a.shape)}")
    if not np.all(np.isfinite(a)) or (a < 0).any():
        raise ValueError(f"{fn}: norms must be finite and non-negative (they are norms)")
    T, B = a.shape
    lens = np.full(B, T, np.int64) if lengths is None else as_lengths(lengths, B, T, fn)
    K = int(lens.max()) if B else 0
    if K == 0:
        raise ValueError(f"{fn}: every sequence has length 0, there is no step to measure")
    k = np.arange(K)
    t = np.broadcast_to(k[:, None], (K, B)) if reverse else lens[None, :] - 1 - k[:, None]  # (K, B) the step at distance k
    valid = k[:, None] < lens[None, :]
    vals = np.where(valid, a[np.clip(t, 0, T - 1), np.arange(B)[None, :]], 0.0)
    return k, vals.sum(1) / valid.sum(1)


def recurrent_spectra(model):
    """Spectral radius and largest singular value of each recurrent matrix of ``model``.

    Returns a list of dicts {"layer", "parameter", "gate", "spectral_radius", "max_singular_value"},
    one per gate block W_h{gate} (H, H) of each weight_hh (RNN: one block; LSTM i, f, g, o;
    GRU r, z, n). With projections (LSTM proj_size P) the block is (H, P) and the recurrence
    it applies is W_h{gate} W_hr (H, H), whose figures are given.
    """
    rows = []
    for path, layer in recurrent_layers(model):
        H, G = layer.hidden_size, len(_GATES[layer.cell])
        for name, p in layer._parameters.items():
            if not name.startswith("weight_hh"):
                continue
            w = np.asarray(p.data, dtype=np.float64)
            w_hr = None
            if layer.proj_size:
                w_hr = np.asarray(layer._parameters["weight_hr" + name[len("weight_hh"):]].data, dtype=np.float64)
            for g in range(G):
                block = w[g * H:(g + 1) * H]
                if w_hr is not None:
                    block = block @ w_hr
                rows.append({"layer": path, "parameter": name, "gate": _GATES[layer.cell][g],
                             "spectral_radius": float(np.max(np.abs(np.linalg.eigvals(block)))),
                             "max_singular_value": float(np.linalg.norm(block, 2))})
    return rows


def plot_profiles(profiles, path=None, title=None, normalize=True, ax=None):
    """Write a PNG of gradient norm against distance in time, one curve per entry.

    profiles: {label: (distance, mean_norm)} as ``distance_profile`` returns. normalize: divide
    each curve by its value at distance 0 (compare the decay, not the scale). ax: a matplotlib
    Axes to draw into instead (then nothing is saved, path may be None). Needs matplotlib.
    """
    try:
        import matplotlib
    except ImportError:
        raise ImportError("plot_profiles needs matplotlib: pip install 'rnncore[plot]' (or: pip install matplotlib)") \
            from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not profiles:
        raise ValueError("plot_profiles: profiles is empty, nothing to plot")
    if ax is None and path is None:
        raise ValueError("plot_profiles: give path (a PNG to write) or ax (an Axes to draw into)")
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for label, (k, v) in profiles.items():
        v = np.asarray(v, dtype=np.float64)
        if normalize and v.size and v[0] > 0:
            v = v / v[0]
        # a norm that underflowed to exactly 0 (saturated units) leaves a gap, not a cliff
        ax.semilogy(np.asarray(k), np.where(v > 0, v, np.nan), label=str(label))
    ax.set_xlabel("distance back in time from the loss (steps)")
    ax.set_ylabel("||dL/dh_t||" + (" / ||dL/dh_last||" if normalize else ""))
    if title:
        ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    if own:
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
    return path


def _tokens(tokens, n, name, fn):
    if tokens is None:
        return [str(i) for i in range(n)]
    if isinstance(tokens, str):
        tokens = tokens.split()
    try:
        tokens = [str(t) for t in tokens]
    except TypeError:
        raise TypeError(f"{fn}: {name} must be a sequence of tokens (or a str of space-separated ones), "
                        f"got {type(tokens).__name__}") from None
    if len(tokens) != n:
        raise ValueError(f"{fn}: {name} must have {n} tokens (alpha's {'columns' if 'source' in name else 'rows'}), "
                         f"got {len(tokens)}")
    return tokens


def plot_attention(alpha, source_tokens=None, target_tokens=None, path=None, title=None, ax=None):
    """Write a PNG heat-map of attention weights for one sentence pair.

    alpha: (T, S) weights, row t the attention of target step t over the S source positions
    (e.g. ``Attention.forward``'s alpha[:, b, :lengths[b]] for sequence b). source_tokens: S
    tokens (columns), target_tokens: T tokens (rows); a str is split on spaces, None numbers
    the positions. ax: a matplotlib Axes to draw into instead (then nothing is saved, path may
    be None). Returns path. Needs matplotlib.
    """
    fn = "plot_attention"
    try:
        a = np.asarray(alpha, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{fn}: alpha must be a (T, S) array of weights, got {type(alpha).__name__}") from None
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"{fn}: alpha must have shape (T, S) with T, S >= 1, got {shape_str(a.shape)}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{fn}: alpha must be finite")
    src = _tokens(source_tokens, a.shape[1], "source_tokens", fn)
    tgt = _tokens(target_tokens, a.shape[0], "target_tokens", fn)
    if ax is None and path is None:
        raise ValueError(f"{fn}: give path (a PNG to write) or ax (an Axes to draw into)")
    try:
        import matplotlib
    except ImportError:
        raise ImportError(f"{fn} needs matplotlib: pip install 'rnncore[plot]' (or: pip install matplotlib)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    own = ax is None
    if own:
        T, S = a.shape
        fig, ax = plt.subplots(figsize=(min(2.0 + 0.35 * S, 40.0), min(1.5 + 0.3 * T, 40.0)), dpi=100)
    image = ax.imshow(a, cmap="viridis", vmin=0.0, vmax=max(1e-12, float(a.max())), aspect="auto",
                      interpolation="nearest")
    ax.set_xticks(range(len(src)))
    ax.set_xticklabels(src, rotation=90)
    ax.set_yticks(range(len(tgt)))
    ax.set_yticklabels(tgt)
    ax.set_xlabel("source")
    ax.set_ylabel("target")
    if title:
        ax.set_title(title)
    if own:
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        fig.tight_layout()
        fig.savefig(path, format="png")
        plt.close(fig)
    return path
