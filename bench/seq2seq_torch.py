"""The PyTorch peer of rnncore.nn.Seq2Seq (issue 12), written the way a PyTorch user writes it.

Only the benchmark imports torch (never rnncore/). The model is the OpenNMT-py RNN seq2seq
(JoeyNMT's RecurrentDecoder is the same shape): Embedding -> bidirectional nn.LSTM encoder over
a PackedSequence of the source lengths -> "concat" bridge of the two directions (or "linear",
"zeros") -> decoder -> Linear generator -> cross-entropy with ignore_index=-100 (mean over the
counted target tokens).

Shape letters as rnncore's seq2seq: S source steps, T target steps, B batch, V vocabulary,
E embedding_dim, He = H // 2 encoder units per direction, Hm = 2 * He memory width, H the
decoder's hidden size (= attentional-state width Ho), L layers. Time-major like rnncore:
src (S, B), tgt_in / tgt_out (T, B); the attention works batch-first internally (bmm).

Decoder placements (Luong et al. 2015):
- input_feed=True: nn.LSTM(E + H, H, L) called on ONE step at a time in a Python loop over
  the target steps; step t reads [emb(y_t) ; attn_h_{t-1}] (attn_h_0 = 0), then attention
  over the memory gives attn_h_t = tanh(W_out [c_t ; h_t] (+ b_out)) (OpenNMT-py's
  InputFeedRNNDecoder; the fed state is the undropped one, as in rnncore).
- input_feed=False: nn.LSTM over all target steps at once, then the attention of every step in
  batched bmm's.
Attention kinds (OpenNMT-py's GlobalAttention): "dot" (h . m), "general" ((W_in h) . m),
"additive" (v . tanh(W_q h + b_q + W_k m)); masked to each source's length (-inf, then
softmax: weights past the length are exactly 0). The additive memory projection W_k m is
computed once per batch (a careful user's choice; OpenNMT-py recomputes it every step).

Parameter names mirror rnncore's Seq2Seq state_dict (PyTorch-style weight_ih_l{k}[_reverse],
OpenNMT-py's linear_in / linear_query / linear_context / v / linear_out): encoder.embedding.*,
encoder.rnn.*, bridge.h/c.* (linear bridge), decoder.embedding.*, decoder.rnn.*, decoder.attn.*,
decoder.generator.*. The one difference: with input feeding rnncore keeps the attention inside
its recurrence (decoder.rnn.attn.*); here it is decoder.attn.* in both placements, and
rnncore_key() / load_rnncore_state() translate.

Decoding: greedy() and beam_search() are the usual Python loops over steps on a batch of
sources (B * K rows for beam width K), OpenNMT-py style: log_softmax, add the beams' scores,
topk over K * V per source, reorder the states with index_select, a hypothesis that picks </s>
is set aside (its row gets -inf), a source is done once it holds K finished hypotheses (or at
max_len, when its live beams join as unfinished), finished sources are dropped from the batch.
Each hypothesis: tokens (without <s>, </s> included when it ended), score (sum of log-probs),
normalized = score / len(tokens) ** length_penalty; n-best sorted by normalized.
"""
import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

ATTN_KINDS = {"dot": "dot", "general": "general", "additive": "additive", "mlp": "additive", "concat": "additive",
              "bahdanau": "additive"}


class GlobalAttention(nn.Module):
    """Luong/Bahdanau global attention. query (B, Tq, Hq), memory (B, S, Hm), mask (B, S) bool
    (True = a real position) -> (attn_h (B, Tq, Ho), alpha (B, Tq, S))."""

    def __init__(self, query_size, memory_size, attn_type="general", attention_size=None, output_bias=None):
        super().__init__()
        self.attn_type = ATTN_KINDS[attn_type]
        if self.attn_type == "dot" and query_size != memory_size:
            raise ValueError(f"dot attention needs query_size == memory_size, got {query_size} and {memory_size}")
        if self.attn_type == "general":
            self.linear_in = nn.Linear(query_size, memory_size, bias=False)
        elif self.attn_type == "additive":
            A = attention_size or query_size
            self.linear_context = nn.Linear(memory_size, A, bias=False)
            self.linear_query = nn.Linear(query_size, A, bias=True)
            self.v = nn.Linear(A, 1, bias=False)
        if output_bias is None:
            output_bias = self.attn_type == "additive"  # OpenNMT-py: out_bias = attn_type == "mlp"
        self.linear_out = nn.Linear(memory_size + query_size, query_size, bias=output_bias)

    def keys(self, memory):
        """What depends on the memory alone, once per batch (additive: W_k m)."""
        return self.linear_context(memory) if self.attn_type == "additive" else None

    def score(self, query, memory, keys):
        if self.attn_type == "dot":
            return torch.bmm(query, memory.transpose(1, 2))
        if self.attn_type == "general":
            return torch.bmm(self.linear_in(query), memory.transpose(1, 2))
        # additive: (B, Tq, 1, A) + (B, 1, S, A) -> tanh -> v -> (B, Tq, S)
        wq = self.linear_query(query).unsqueeze(2)
        return self.v(torch.tanh(wq + keys.unsqueeze(1))).squeeze(-1)

    def forward(self, query, memory, mask, keys=None):
        if keys is None:
            keys = self.keys(memory)
        scores = self.score(query, memory, keys)
        scores = scores.masked_fill(~mask.unsqueeze(1), float("-inf"))
        alpha = torch.softmax(scores, dim=-1)
        context = torch.bmm(alpha, memory)
        attn_h = torch.tanh(self.linear_out(torch.cat([context, query], dim=-1)))
        return attn_h, alpha


class Encoder(nn.Module):
    def __init__(self, vocab_size, embedding_dim, hidden_size, num_layers, bidirectional, dropout, padding_idx):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=padding_idx)
        self.drop = nn.Dropout(dropout)
        self.rnn = nn.LSTM(embedding_dim, hidden_size, num_layers=num_layers, bidirectional=bidirectional,
                           dropout=dropout if num_layers > 1 else 0.0)

    def forward(self, src, src_lengths):
        """src (S, B), src_lengths (B,) cpu int64 -> memory (S, B, Hm) (0 past each length), (h_n, c_n)."""
        x = self.drop(self.embedding(src))
        packed = pack_padded_sequence(x, src_lengths, enforce_sorted=False)
        out, state = self.rnn(packed)
        memory, _ = pad_packed_sequence(out, total_length=src.shape[0])
        return memory, state


class Bridge(nn.Module):
    """The decoder's initial (h, c) from the encoder's: "concat" the two directions of each layer,
    "linear" (tanh for h, identity for c, as rnncore's), or "zeros" (None)."""

    def __init__(self, kind, enc_layers, directions, enc_hidden, dec_layers, dec_hidden):
        super().__init__()
        self.kind, self.sizes = kind, (enc_layers, directions, enc_hidden, dec_layers, dec_hidden)
        if kind == "linear":
            n_in, n_out = enc_layers * directions * enc_hidden, dec_layers * dec_hidden
            self.h = nn.Linear(n_in, n_out)
            self.c = nn.Linear(n_in, n_out)
        elif kind == "concat" and not (enc_layers == dec_layers and directions * enc_hidden == dec_hidden):
            raise ValueError("bridge='concat' needs as many encoder as decoder layers and D*He == H")

    def _map(self, a, layer, tanh):
        Le, D, He, Ld, Hd = self.sizes
        B = a.shape[1]
        if self.kind == "concat":  # (Le*D, B, He) -> (Le, B, D*He), OpenNMT-py's _fix_enc_hidden
            return a.view(Le, D, B, He).transpose(1, 2).reshape(Le, B, D * He)
        y = layer(a.transpose(0, 1).reshape(B, Le * D * He))
        if tanh:
            y = torch.tanh(y)
        return y.view(B, Ld, Hd).transpose(0, 1).contiguous()

    def forward(self, state):
        if self.kind == "zeros":
            return None
        h, c = state
        return self._map(h, getattr(self, "h", None), True), self._map(c, getattr(self, "c", None), False)


class Decoder(nn.Module):
    def __init__(self, vocab_size, embedding_dim, hidden_size, num_layers, attention, memory_size, input_feed,
                 attention_size, dropout, padding_idx):
        super().__init__()
        self.input_feed = bool(input_feed) and attention is not None
        self.hidden_size = hidden_size
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=padding_idx)
        self.drop_in = nn.Dropout(dropout)
        self.drop_out = nn.Dropout(dropout)
        rnn_in = embedding_dim + hidden_size if self.input_feed else embedding_dim
        self.rnn = nn.LSTM(rnn_in, hidden_size, num_layers=num_layers, dropout=dropout if num_layers > 1 else 0.0)
        self.attn = None if attention is None else GlobalAttention(hidden_size, memory_size, attention,
                                                                     attention_size)
        self.generator = nn.Linear(hidden_size, vocab_size)

    def forward(self, tgt_in, memory, mask, state):
        """tgt_in (T, B), memory (S, B, Hm), mask (B, S) -> logits (T, B, V)."""
        emb = self.drop_in(self.embedding(tgt_in))
        mem = memory.transpose(0, 1)  # (B, S, Hm) for bmm
        if self.attn is None:
            out, _ = self.rnn(emb, state)
        elif not self.input_feed:
            h, _ = self.rnn(emb, state)
            attn_h, _ = self.attn(h.transpose(0, 1), mem, mask)
            out = attn_h.transpose(0, 1)
        else:
            keys = self.attn.keys(mem)
            feed = emb.new_zeros(emb.shape[1], self.hidden_size)
            outs = []
            for t in range(emb.shape[0]):  # the Python loop over target steps
                h, state = self.rnn(torch.cat([emb[t], feed], dim=-1).unsqueeze(0), state)
                attn_h, _ = self.attn(h.transpose(0, 1), mem, mask, keys)
                feed = attn_h.squeeze(1)
                outs.append(feed)
            out = torch.stack(outs)
        return self.generator(self.drop_out(out))

    def step(self, ids, feed, state, mem, mask, keys):
        """One decoding step: ids (N,), feed (N, H) or None -> (log-probs (N, V), attn_h, state)."""
        x = self.embedding(ids)
        if self.input_feed:
            x = torch.cat([x, feed], dim=-1)
        h, state = self.rnn(x.unsqueeze(0), state)
        out = h.transpose(0, 1)
        if self.attn is not None:
            out, _ = self.attn(out, mem, mask, keys)
        out = out.squeeze(1)
        return torch.log_softmax(self.generator(out), dim=-1), out, state


class Seq2SeqTorch(nn.Module):
    """Seq2SeqTorch(src_vocab_size, tgt_vocab_size, embedding_dim=256, hidden_size=256,
    num_layers=1, attention="general", input_feed=True, bridge="concat", dropout=0.0,
    padding_idx=None): LSTM cells, bidirectional encoder of hidden_size // 2 per direction."""

    def __init__(self, src_vocab_size, tgt_vocab_size, embedding_dim=256, hidden_size=256, num_layers=1,
                 attention="general", input_feed=True, attention_size=None, bridge="concat", dropout=0.0,
                 padding_idx=None):
        super().__init__()
        He = hidden_size // 2
        self.encoder = Encoder(src_vocab_size, embedding_dim, He, num_layers, True, dropout, padding_idx)
        self.bridge = Bridge(bridge, num_layers, 2, He, num_layers, hidden_size)
        self.decoder = Decoder(tgt_vocab_size, embedding_dim, hidden_size, num_layers, attention, 2 * He, input_feed,
                               attention_size, dropout, padding_idx)
        self.tgt_vocab_size = tgt_vocab_size

    @staticmethod
    def _mask(src_lengths, S):
        return torch.arange(S).unsqueeze(0) < src_lengths.unsqueeze(1)  # (B, S)

    def forward(self, src, src_lengths, tgt_in):
        memory, enc_state = self.encoder(src, src_lengths)
        return self.decoder(tgt_in, memory, self._mask(src_lengths, src.shape[0]), self.bridge(enc_state))

    def loss(self, src, src_lengths, tgt_in, tgt_out, ignore_index=-100):
        logits = self(src, src_lengths, tgt_in)
        return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt_out.reshape(-1),
                                           ignore_index=ignore_index)

    # -- decoding ---------------------------------------------------------------------------
    def _start(self, src, src_lengths):
        memory, enc_state = self.encoder(src, src_lengths)
        mem = memory.transpose(0, 1)
        mask = self._mask(src_lengths, src.shape[0])
        keys = self.decoder.attn.keys(mem) if self.decoder.attn is not None else None
        return mem, mask, keys, self.bridge(enc_state)

    @torch.inference_mode()
    def greedy(self, src, src_lengths, bos, eos, max_len):
        """-> per source one hypothesis dict (tokens, score, normalized with length_penalty 0)."""
        mem, mask, keys, state = self._start(src, src_lengths)
        B = src.shape[1]
        ids = torch.full((B,), bos, dtype=torch.long)
        feed = mem.new_zeros(B, self.decoder.hidden_size)
        tokens, score = [[] for _ in range(B)], torch.zeros(B, dtype=mem.dtype)
        done = torch.zeros(B, dtype=torch.bool)
        for _ in range(max_len):
            logp, feed, state = self.decoder.step(ids, feed, state, mem, mask, keys)
            best, ids = logp.max(dim=-1)
            score = torch.where(done, score, score + best)
            for b in (~done).nonzero().flatten().tolist():
                tokens[b].append(int(ids[b]))
            done |= ids == eos
            if bool(done.all()):
                break
        return [{"tokens": tokens[b], "score": float(score[b]), "normalized": float(score[b])} for b in range(B)]

    @torch.inference_mode()
    def beam_search(self, src, src_lengths, bos, eos, max_len, beam_width=5, n_best=1, length_penalty=0.0):
        """-> per source a list of up to n_best hypotheses (see the module docstring)."""
        K, V = beam_width, self.tgt_vocab_size
        mem, mask, keys, state = self._start(src, src_lengths)
        B = src.shape[1]
        # Tile every source K times: rows b * K + k.
        tile = torch.arange(B).repeat_interleave(K)
        mem, mask = mem.index_select(0, tile), mask.index_select(0, tile)
        keys = keys.index_select(0, tile) if keys is not None else None
        if state is not None:
            state = tuple(s.index_select(1, tile) for s in state)
        ids = torch.full((B * K,), bos, dtype=torch.long)
        feed = mem.new_zeros(B * K, self.decoder.hidden_size)
        scores = mem.new_full((B, K), float("-inf"))
        scores[:, 0] = 0.0  # only the first beam is alive at the start (the others are copies)
        history = torch.empty((B * K, 0), dtype=torch.long)
        alive = torch.arange(B)  # original source index of each remaining batch entry
        finished = [[] for _ in range(B)]

        def norm(score, n):
            return score / (n ** length_penalty) if length_penalty else score

        for step in range(max_len):
            logp, feed, state = self.decoder.step(ids, feed, state, mem, mask, keys)
            n = alive.numel()
            cand = (scores.view(n * K, 1) + logp).view(n, K * V)
            top, flat = cand.topk(K, dim=-1)  # (n, K)
            origin = flat // V + (torch.arange(n) * K).unsqueeze(1)  # row each winner extends
            ids = (flat % V).view(-1)
            origin = origin.view(-1)
            history = torch.cat([history.index_select(0, origin), ids.unsqueeze(1)], dim=1)
            feed = feed.index_select(0, origin)
            if state is not None:
                state = tuple(s.index_select(1, origin) for s in state)
            scores = top
            ended = (ids == eos).view(n, K)
            last = step == max_len - 1
            record = torch.ones_like(ended) if last else ended
            for i, k in record.nonzero().tolist():
                s = float(scores[i, k])
                if s == float("-inf"):
                    continue
                toks = history[i * K + k].tolist()
                finished[int(alive[i])].append({"tokens": toks, "score": s, "normalized": norm(s, len(toks))})
            scores = scores.masked_fill(ended, float("-inf"))
            if last:
                break
            done = torch.tensor([len(finished[int(b)]) >= K for b in alive]) | torch.isinf(scores).all(dim=1)
            if bool(done.any()):  # drop the finished sources from the batch (OpenNMT-py's _prune)
                keep = (~done).nonzero().flatten()
                if keep.numel() == 0:
                    break
                rows = (keep.unsqueeze(1) * K + torch.arange(K)).view(-1)
                alive, scores = alive.index_select(0, keep), scores.index_select(0, keep)
                ids, feed, history = ids.index_select(0, rows), feed.index_select(0, rows), history.index_select(0, rows)
                mem, mask = mem.index_select(0, rows), mask.index_select(0, rows)
                keys = keys.index_select(0, rows) if keys is not None else None
                if state is not None:
                    state = tuple(s.index_select(1, rows) for s in state)
        return [sorted(f, key=lambda h: -h["normalized"])[:n_best] for f in finished]


# --------------------------------------------------------------------------------------------
# rnncore <-> torch weights
# --------------------------------------------------------------------------------------------
def rnncore_key(torch_key, input_feed):
    """The rnncore Seq2Seq state_dict name of a torch parameter name."""
    if input_feed and torch_key.startswith("decoder.attn."):
        return "decoder.rnn.attn." + torch_key[len("decoder.attn."):]
    return torch_key


def load_rnncore_state(model, state, dtype=None):
    """Copy an rnncore Seq2Seq state_dict (name -> numpy array) into the torch model.

    Every torch parameter must find its array, with the same shape; rnncore names left over
    raise too (a different architecture). dtype: the torch dtype to convert the model to first
    (None: keep)."""
    if dtype is not None:
        model.to(dtype)
    own = dict(model.named_parameters())
    want = {rnncore_key(k, model.decoder.input_feed): k for k in own}
    missing = [k for k in want if k not in state]
    unexpected = [k for k in state if k not in want]
    if missing or unexpected:
        raise KeyError(f"load_rnncore_state: missing {missing}; unexpected {unexpected}")
    with torch.no_grad():
        for rk, tk in want.items():
            a = np.asarray(state[rk])
            p = own[tk]
            if tuple(a.shape) != tuple(p.shape):
                raise ValueError(f"load_rnncore_state: {rk} has shape {a.shape}, torch's {tk} {tuple(p.shape)}")
            p.copy_(torch.from_numpy(np.ascontiguousarray(a)).to(p.dtype))
    return model


def torch_state_as_rnncore(model):
    """The torch model's parameters as an rnncore-named dict of numpy arrays."""
    return {rnncore_key(k, model.decoder.input_feed): p.detach().cpu().numpy().copy()
            for k, p in model.named_parameters()}


def as_torch_batch(src, src_lengths, tgt_in, tgt_out):
    """numpy int64 arrays (time-major, rnncore's PairBatch layout) -> torch tensors."""
    return tuple(torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64)) for a in (src, src_lengths, tgt_in,
                                                                                    tgt_out))


__all__ = ["GlobalAttention", "Seq2SeqTorch", "load_rnncore_state", "torch_state_as_rnncore", "rnncore_key",
           "as_torch_batch"]
