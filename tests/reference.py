"""A slow, obvious numpy reference for RNN (tanh/relu), LSTM and GRU, forward only, float64.

Written straight from PyTorch's documented equations, independently of the C++ kernels:
one sequence at a time, one step at a time, no packing, no fused biases.

    RNN:  h' = act(W_ih x + b_ih + W_hh h + b_hh)
    LSTM: i = s(W_ii x + b_ii + W_hi h + b_hi)    f = s(W_if x + b_if + W_hf h + b_hf)
          g = tanh(W_ig x + b_ig + W_hg h + b_hg) o = s(W_io x + b_io + W_ho h + b_ho)
          c' = f * c + i * g                        h' = o * tanh(c')
          with projections (proj_size P, weight_hr (P, H)): h' = W_hr (o * tanh(c')), h is P wide
    GRU:  r = s(W_ir x + b_ir + W_hr h + b_hr)    z = s(W_iz x + b_iz + W_hz h + b_hz)
          n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
          h' = (1 - z) * n + z * h

Weights are stacked gate-major as in PyTorch: W_ih = [W_i*; ...] of shape (G*H, I).

Lengths: sequence b runs for lengths[b] steps; at t >= lengths[b] its output is 0 and its
state is left as it was, so h_n is the state after its own last step. A reverse direction
visits t = lengths[b]-1, ..., 0 (backwards within its own length).

Stacking: layer k > 0 reads layer k-1's (T, B, D*H) output (optionally multiplied by a given
dropout mask); a bidirectional layer concatenates [forward, reverse] along the last axis.
h0 / c0 / h_n / c_n are (L*D, B, H) indexed by layer * D + direction (with projections h0,
h_n and the outputs are P wide instead, and layer k > 0 reads D*P features).
"""
import numpy as np

GATES = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def cell_step(kind, x, h, c, w_ih, w_hh, b_ih=None, b_hh=None, trace=None, w_hr=None):
    """One step for one sequence: x (I,), h (H,), c (H,) or None -> (h', c' or None).

    `trace`, if a list, receives the pre-activation vector of RNN cells (to find relu kinks).
    w_hr: (P, H) LSTM projection or None; h and h' are then (P,).
    """
    G = GATES[kind]
    H = w_hh.shape[0] // G
    gi = w_ih @ x + (b_ih if b_ih is not None else 0.0)  # (G*H,)
    gh = w_hh @ h + (b_hh if b_hh is not None else 0.0)  # (G*H,)
    assert gi.shape == (G * H,)
    if kind in ("rnn_tanh", "rnn_relu"):
        pre = gi + gh
        if trace is not None:
            trace.append(pre.copy())
        h_new = np.tanh(pre) if kind == "rnn_tanh" else np.maximum(pre, 0.0)
        return h_new, None
    if kind == "lstm":
        i = sigmoid(gi[0:H] + gh[0:H])
        f = sigmoid(gi[H:2 * H] + gh[H:2 * H])
        g = np.tanh(gi[2 * H:3 * H] + gh[2 * H:3 * H])
        o = sigmoid(gi[3 * H:4 * H] + gh[3 * H:4 * H])
        c_new = f * c + i * g
        m = o * np.tanh(c_new)
        return (m if w_hr is None else w_hr @ m), c_new
    if kind == "gru":
        r = sigmoid(gi[0:H] + gh[0:H])
        z = sigmoid(gi[H:2 * H] + gh[H:2 * H])
        n = np.tanh(gi[2 * H:3 * H] + r * gh[2 * H:3 * H])
        return (1.0 - z) * n + z * h, None
    raise ValueError(kind)


def layer_forward(kind, x, w_ih, w_hh, b_ih=None, b_hh=None, h0=None, c0=None, lengths=None, reverse=False,
                  trace=None, w_hr=None):
    """One layer, one direction. x (T, B, I) -> output (T, B, R), h_n (B, R), c_n (B, H) or None;
    R = P with a projection w_hr (P, H), else H."""
    x = np.asarray(x, np.float64)
    T, B, _ = x.shape
    H = w_hh.shape[0] // GATES[kind]
    R = H if w_hr is None else w_hr.shape[0]
    lstm = kind == "lstm"
    lengths = np.full(B, T) if lengths is None else np.asarray(lengths)
    out = np.zeros((T, B, R))
    h_n = np.zeros((B, R))
    c_n = np.zeros((B, H)) if lstm else None
    for b in range(B):
        h = np.zeros(R) if h0 is None else np.array(h0[b], np.float64)
        c = (np.zeros(H) if c0 is None else np.array(c0[b], np.float64)) if lstm else None
        n = int(lengths[b])
        times = range(n - 1, -1, -1) if reverse else range(n)
        for t in times:
            h, c = cell_step(kind, x[t, b], h, c, w_ih, w_hh, b_ih, b_hh, trace, w_hr)
            out[t, b] = h
        h_n[b] = h
        if lstm:
            c_n[b] = c
    return out, h_n, c_n


def rnn_forward(kind, x, params, num_layers=1, bidirectional=False, h0=None, c0=None, lengths=None, masks=None,
                trace=None):
    """A stacked (bi)directional network, time-major.

    x: (T, B, I). params: PyTorch names -> arrays (weight_ih_l0, bias_hh_l1_reverse, ...;
    biases may be absent). masks: None or a list of num_layers - 1 arrays (T, B, D*H) that
    multiply each layer's output before the next layer reads it (inverted dropout).
    Returns output (T, B, D*H), h_n (L*D, B, H), c_n (L*D, B, H) or None.
    """
    D = 2 if bidirectional else 1
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    layer_input = np.asarray(x, np.float64)
    T, B, _ = layer_input.shape
    H = p["weight_hh_l0"].shape[0] // GATES[kind]
    R = p["weight_hr_l0"].shape[0] if "weight_hr_l0" in p else H
    h_n = np.zeros((num_layers * D, B, R))
    c_n = np.zeros((num_layers * D, B, H)) if kind == "lstm" else None
    for layer in range(num_layers):
        outs = []
        for d in range(D):
            k = layer * D + d
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            out, hn, cn = layer_forward(
                kind, layer_input, p["weight_ih" + sfx], p["weight_hh" + sfx], p.get("bias_ih" + sfx),
                p.get("bias_hh" + sfx), None if h0 is None else h0[k], None if c0 is None else c0[k], lengths,
                reverse=bool(d), trace=trace, w_hr=p.get("weight_hr" + sfx))
            outs.append(out)
            h_n[k] = hn
            if c_n is not None:
                c_n[k] = cn
        layer_input = np.concatenate(outs, axis=2)
        if masks is not None and layer < num_layers - 1:
            layer_input = layer_input * masks[layer]
    return layer_input, h_n, c_n
