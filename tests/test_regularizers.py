"""Zoneout and recurrent dropout: the rewrite of the equations, the variant's kernels
against the interpreter and against the papers' equations written as PyTorch loops, the
masks (seeded, per step or per sequence, their rates), evaluation mode, gradients
against finite differences through Layer and cellc.torch.RNN, and the errors."""
import re

import numpy as np
import pytest
from cellcheck import all_sizes, layer_directional_check, rel_err
from conftest import ROOT

import cellc
from cellc.reference import interpreter
from cellc.driver import compile_bytes
from cellc.ir.cell import format_equation
from cellc.layers import Layer
from cellc.passes import regularize, split
from cellc.passes.regularize import matmul_states
from cellc.runtime.regularizers import Rates, Regularizers
from cellc.frontend.spec import parse_spec, read_spec

T, B, I, H = 6, 3, 4, 5


def spec(name):
    return ROOT / "specs" / f"{name}.toml"


def equations(cell):
    return [format_equation(n) for n in cell.nodes]


# ---- the rewrite ----------------------------------------------------------------------
def test_lstm_is_rewritten_as_in_the_papers():
    """Krueger et al. eqs. for the LSTM: h' reads tanh of the cell state before zoneout;
    Gal & Ghahramani: the state is dropped where it enters the recurrent matrices."""
    cell = regularize(read_spec(spec("lstm")), Regularizers.of(["h", "c"], ["h"]))
    assert equations(cell) == [
        "dropped__h = dropout__h*h",
        "i = sigmoid(b_i + (dropped__h @ W_hi) + (x @ W_xi))",
        "f = sigmoid(b_f + (dropped__h @ W_hf) + (x @ W_xf))",
        "g = tanh(b_g + (dropped__h @ W_hg) + (x @ W_xg))",
        "o = sigmoid(b_o + (dropped__h @ W_ho) + (x @ W_xo))",
        "update__c = c*f + g*i",
        "update__h = o*tanh(update__c)",
        "c' = c*zoneout__c + update__c*(1 - zoneout__c)",
        "h' = h*zoneout__h + update__h*(1 - zoneout__h)",
    ]
    assert [(v.name, v.dim, v.grad) for v in cell.inputs] == [
        ("x", "I", True), ("zoneout__c", "H", False), ("zoneout__h", "H", False),
        ("dropout__h", "H", False)]
    assert cell.output == "new__h"       # the output sequence is the zoned state


def test_the_states_recurrent_dropout_can_drop():
    found = {name: matmul_states(read_spec(spec(name)))
             for name in ("lstm", "gru_cho", "lstmp", "peephole_full", "indrnn", "mingru")}
    assert found == {"lstm": ("h",), "gru_cho": ("s",), "lstmp": ("h",),   # not c via c'
                     "peephole_full": ("h", "c"), "indrnn": (), "mingru": ()}


def test_a_value_between_the_state_and_the_product_is_copied():
    """`rs = r * s` feeds both `rs @ W_ss` and an elementwise term: the product reads a
    dropped copy, the elementwise term the original."""
    text = spec("gru_cho").read_text().replace(
        "u  = tanh(x @ W_xs + (r * s) @ W_ss + b_s)",
        "rs = r * s\nu  = tanh(x @ W_xs + rs @ W_ss + b_s + rs)")
    cell = regularize(parse_spec(text.encode()), Regularizers.of(recurrent_dropout=["s"]))
    assert "dropped__rs = dropped__s*r" in equations(cell)
    assert "u = tanh(b_s + rs + (dropped__rs @ W_ss) + (x @ W_xs))" in equations(cell)
    alone = regularize(parse_spec(text.replace("b_s + rs)", "b_s)").encode()),
                       Regularizers.of(recurrent_dropout=["s"]))
    assert "rs" not in {n.name for n in alone.nodes}       # nothing else read it


def test_no_gradient_is_computed_for_the_masks():
    compiled = compile_bytes(spec("lstm").read_bytes(), "lstm.toml",
                                          Regularizers.of(["h", "c"], ["h"]))
    for grad in compiled.derivation.grads.values():
        assert not {name for name, _ in grad.grads} & {"zoneout__c", "zoneout__h", "dropout__h"}
    assert "_d__zoneout" not in compiled.source and "_d__dropout" not in compiled.source


# ---- the variant's kernels --------------------------------------------------------------
VARIANTS = {"lstm": (["h", "c"], ["h"]), "gru_cho": (["s"], ["s"]),
            "lstmp": (["h", "c"], ["h"]), "ln_lstm": (["c"], ["h"])}


@pytest.mark.parametrize("name", VARIANTS)
def test_variant_kernels_match_the_interpreter(name):
    zoneout, dropout = VARIANTS[name]
    module = cellc.load(spec(name), zoneout=zoneout, recurrent_dropout=dropout)
    cell = split(regularize(read_spec(spec(name)), Regularizers.of(zoneout, dropout)))
    sizes = all_sizes(module, {"I": I, "H": H})
    rng = np.random.default_rng(0)
    params = module.init_params(np.float64, seed=1, **sizes)
    rates = Rates({s: 0.4 for s in zoneout}, {s: 0.3 for s in dropout})
    widths = {s: sizes[d] for s, d in module.STATES.items()}
    inputs = {"x": rng.normal(size=(T, B, I)), **rates.masks(T, B, widths, np.float64, rng)}
    states = {s: rng.normal(scale=0.5, size=(B, w)) for s, w in widths.items()}
    y, final, cache = module.forward(params, inputs, states)
    ref_y, ref_final, tape = interpreter.forward(cell, params, inputs, states)
    dy = rng.normal(size=y.shape)
    ds = {k: rng.normal(size=v.shape) for k, v in final.items()}
    g = module.backward(cache, dy, ds)
    dp, dx, d0 = interpreter.backward(cell, tape, dy, ds)
    assert set(g.inputs) == set(dx) == {"x"}
    errors = [rel_err(y, ref_y)] + [rel_err(final[k], ref_final[k]) for k in final]
    errors += [rel_err(g.params[k], dp[k]) for k in dp] + [rel_err(g.inputs["x"], dx["x"])]
    errors += [rel_err(g.states[k], d0[k]) for k in d0]
    assert max(errors) < 1e-12


def test_masks_of_nothing_give_the_cell_as_written():
    """Zoneout masks 0 and dropout masks 1: outputs, states and every gradient are the
    plain LSTM's; zoneout masks 1: the states never move."""
    import generated.lstm as plain
    module = cellc.load(spec("lstm"), zoneout=["h", "c"], recurrent_dropout=["h"])
    rng = np.random.default_rng(3)
    params = plain.init_params(np.float64, I=I, H=H)
    x = rng.normal(size=(T, B, I))
    states = {s: rng.normal(size=(B, H)) for s in ("h", "c")}
    dy = rng.normal(size=(T, B, H))
    y, final, cache = plain.forward(params, x, states)
    g = plain.backward(cache, dy)
    idle = {"zoneout__c": np.zeros((T, B, H)), "zoneout__h": np.zeros((T, B, H)),
            "dropout__h": np.ones((T, B, H))}
    y2, final2, cache2 = module.forward(params, {"x": x, **idle}, states)
    g2 = module.backward(cache2, dy)
    assert rel_err(y2, y) < 1e-15 and rel_err(g2.inputs["x"], g.inputs["x"]) < 1e-14
    assert max(rel_err(g2.params[k], g.params[k]) for k in g.params) < 1e-14
    frozen = dict(idle, zoneout__c=np.ones((T, B, H)), zoneout__h=np.ones((T, B, H)))
    y3, final3, _ = module.forward(params, {"x": x, **frozen}, states)
    assert np.array_equal(final3["c"], states["c"]) and np.array_equal(y3[-1], states["h"])


# ---- against the papers' equations, written as PyTorch loops ---------------------------
torch = pytest.importorskip("torch")


def zoneout_lstm(p, x, h, c, m):
    """Krueger et al. 2016, section 3 (LSTM), with Gal & Ghahramani's mask on h."""
    hd = h * m["dropout__h"]
    i = torch.sigmoid(x @ p["W_xi"] + hd @ p["W_hi"] + p["b_i"])
    f = torch.sigmoid(x @ p["W_xf"] + hd @ p["W_hf"] + p["b_f"])
    g = torch.tanh(x @ p["W_xg"] + hd @ p["W_hg"] + p["b_g"])
    o = torch.sigmoid(x @ p["W_xo"] + hd @ p["W_ho"] + p["b_o"])
    c_new = f * c + i * g
    h_new = o * torch.tanh(c_new)
    zc, zh = m["zoneout__c"], m["zoneout__h"]
    return zh * h + (1 - zh) * h_new, zc * c + (1 - zc) * c_new


def dropout_gru(p, x, h, m):
    """torch.nn.GRU's equations with the recurrent mask on h before every W_h* (as
    Keras's GRU with reset_after), and zoneout of h."""
    hd = h * m["dropout__h"]
    r = torch.sigmoid(x @ p["W_xr"] + hd @ p["W_hr"] + p["b_r"])
    z = torch.sigmoid(x @ p["W_xz"] + hd @ p["W_hz"] + p["b_z"])
    n = torch.tanh(x @ p["W_xn"] + p["b_xn"] + r * (hd @ p["W_hn"] + p["b_hn"]))
    h_new = (1 - z) * n + z * h
    return (m["zoneout__h"] * h + (1 - m["zoneout__h"]) * h_new,)


@pytest.mark.parametrize("name,step", [("lstm", zoneout_lstm), ("gru", dropout_gru)])
def test_variant_matches_the_papers_equations(name, step):
    base = __import__(f"generated.{name}", fromlist=["x"])
    states = list(base.STATES)
    module = cellc.load(spec(name), zoneout=states, recurrent_dropout=["h"])
    rng = np.random.default_rng(5)
    params = {k: v + rng.normal(scale=0.3, size=v.shape)
              for k, v in base.init_params(np.float64, I=I, H=H).items()}
    rates = Rates({s: 0.3 for s in states}, {"h": 0.25})
    masks = rates.masks(T, B, {s: H for s in states}, np.float64, rng)
    x = rng.normal(size=(T, B, I))
    s0 = {s: rng.normal(scale=0.5, size=(B, H)) for s in states}
    dy = rng.normal(size=(T, B, H))
    ds = {s: rng.normal(size=(B, H)) for s in states}
    y, final, cache = module.forward(params, {"x": x, **masks}, s0)
    g = module.backward(cache, dy, ds)

    pt = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    xt = torch.tensor(x, requires_grad=True)
    st = {k: torch.tensor(v, requires_grad=True) for k, v in s0.items()}
    carry, outs = [st[s] for s in states], []
    for t in range(T):
        carry = step(pt, xt[t], *carry, {k: torch.tensor(v[t]) for k, v in masks.items()})
        outs.append(carry[0])
    yt = torch.stack(outs)
    loss = (yt * torch.tensor(dy)).sum() + sum((c * torch.tensor(ds[s])).sum()
                                              for s, c in zip(states, carry))
    loss.backward()
    errors = [rel_err(y, yt.detach().numpy())]
    errors += [rel_err(final[s], c.detach().numpy()) for s, c in zip(states, carry)]
    errors += [rel_err(g.params[k], pt[k].grad.numpy()) for k in params]
    errors += [rel_err(g.inputs["x"], xt.grad.numpy())]
    errors += [rel_err(g.states[s], st[s].grad.numpy()) for s in states]
    assert max(errors) < 1e-13


# ---- the masks a layer draws ------------------------------------------------------------
def test_masks_are_seeded_and_have_their_rates():
    rates = Rates({"c": 0.25}, {"h": 0.4})
    shape = dict(T=50, B=64, widths={"c": 32, "h": 32}, dtype=np.float32)
    a = rates.masks(**shape, rng=np.random.default_rng(1))
    b = rates.masks(**shape, rng=np.random.default_rng(1))
    c = rates.masks(**shape, rng=np.random.default_rng(2))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["zoneout__c"], c["zoneout__c"])
    zone, drop = a["zoneout__c"], a["dropout__h"]
    assert zone.dtype == drop.dtype == np.float32 and zone.shape == (50, 64, 32)
    assert set(np.unique(zone)) == {0.0, 1.0} and abs(zone.mean() - 0.25) < 0.01   # 102,400 draws
    assert np.array_equal(drop, np.broadcast_to(drop[0], drop.shape))   # one per sequence
    assert set(np.unique(drop)) == {np.float32(0), np.float32(1 / 0.6)}
    assert abs((drop[0] == 0).mean() - 0.4) < 0.03                       # 2,048 draws
    assert not np.array_equal(drop[0, 0], drop[0, 1])                     # per sequence
    evaluation = rates.masks(**shape)
    assert np.all(evaluation["zoneout__c"] == np.float32(0.25))
    assert np.all(evaluation["dropout__h"] == 1)


def layer_data(layer, seed):
    rng = np.random.default_rng(seed)
    params = layer.init_params(np.float64, seed=seed, I=I, H=H)
    x = rng.normal(size=(T, B, I))
    k = layer.num_layers * layer.directions
    states = {s: rng.normal(scale=0.5, size=(k, B, H)) for s in layer.cell.STATES}
    return params, x, states


def test_layer_gradients_match_finite_differences():
    """Two bidirectional layers over a ragged batch, dropout between them, zoneout and
    recurrent dropout: the same seed replays the same masks, so the loss is a smooth
    function of parameters, inputs and initial states."""
    layer = Layer(spec("lstm"), 2, bidirectional=True, dropout=0.2,
                  zoneout={"c": 0.3, "h": 0.1}, recurrent_dropout=0.25)
    params, x, states = layer_data(layer, 1)
    lengths = np.array([6, 2, 4])

    def run(p, x, s):
        return layer.forward(p, x, s, lengths, training=True, seed=11)

    numeric, analytic, y, _ = layer_directional_check(layer, run, params, x, states)
    assert abs(numeric - analytic) <= 1e-7 * max(1.0, abs(analytic))
    other, _, _ = layer.forward(params, x, states, lengths, training=True, seed=12)
    assert not np.allclose(other, y)          # another seed, other masks


def test_evaluation_uses_the_expectation():
    """Evaluation: zoneout mixes with its rate (the expectation of the mask), recurrent
    dropout is off; the result is deterministic and is the plain cell when only
    recurrent dropout is asked for."""
    import generated.gru as plain
    zoned = Layer(plain, zoneout=0.3, recurrent_dropout=0.5)
    params, x, states = layer_data(zoned, 4)
    y, final, _ = zoned.forward(params, x, states)
    module = cellc.load(spec("gru"), zoneout=["h"], recurrent_dropout=["h"])
    p = {k[: -len("_l0")]: v for k, v in params.items()}
    full = {"zoneout__h": np.full((T, B, H), 0.3), "dropout__h": np.ones((T, B, H))}
    expected, _, _ = module.forward(p, {"x": x, **full}, {"h": states["h"][0]})
    assert np.array_equal(y, expected)
    dropped_only = Layer(plain, recurrent_dropout=0.5)
    y2, _, _ = dropped_only.forward(params, x, states)
    y3, _, _ = plain.forward(p, x, {"h": states["h"][0]})
    assert np.array_equal(y2, y3)


def test_ragged_batches_keep_each_sequence_with_its_masks():
    """With lengths, the batch is sorted longest first inside the module: each
    sequence must still meet its own masks, so a ragged run equals each sequence run
    alone on its own steps."""
    module = cellc.load(spec("lstm"), zoneout=["h", "c"], recurrent_dropout=["h"])
    rng = np.random.default_rng(6)
    params = module.init_params(np.float64, I=I, H=H)
    masks = Rates({"c": 0.4, "h": 0.4}, {"h": 0.3}).masks(T, B, {"c": H, "h": H},
                                                         np.float64, rng)
    inputs = {"x": rng.normal(size=(T, B, I)), **masks}
    lengths = np.array([2, 6, 4])
    y, final, _ = module.forward(params, inputs, lengths=lengths)
    for b, n in enumerate(lengths):
        alone = {k: np.ascontiguousarray(v[:n, b:b + 1]) for k, v in inputs.items()}
        y1, f1, _ = module.forward(params, alone)
        assert rel_err(y[:n, b:b + 1], y1) < 1e-15 and rel_err(final["c"][b], f1["c"][0]) < 1e-15


# ---- in torch -------------------------------------------------------------------------
def test_torch_module_replays_masks_from_the_torch_seed_and_gets_gradients():
    from cellc.torch import RNN
    torch.manual_seed(0)
    rnn = RNN(spec("lstm"), I, H, 2, zoneout=0.2, recurrent_dropout=0.3,
              dtype=torch.float64)
    x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)

    def loss(step=0.0, direction=None):
        torch.manual_seed(42)
        if direction is None:
            return rnn(x)[0].square().sum()
        with torch.no_grad():
            for p, d in zip(rnn.parameters(), direction):
                p.add_(step * d)
            value = rnn(x)[0].square().sum().item()
            for p, d in zip(rnn.parameters(), direction):
                p.sub_(step * d)
            return value

    loss().backward()
    direction = [torch.randn_like(p) for p in rnn.parameters()]
    analytic = sum((p.grad * d).sum().item() for p, d in zip(rnn.parameters(), direction))
    numeric = (loss(1e-6, direction) - loss(-1e-6, direction)) / 2e-6
    assert abs(numeric - analytic) <= 1e-7 * max(1.0, abs(analytic))
    torch.manual_seed(1)
    first = rnn(x)[0]
    torch.manual_seed(1)
    assert torch.equal(first, rnn(x)[0])
    assert not torch.equal(first, rnn(x)[0])          # the next call draws new masks
    rnn.eval()
    assert torch.equal(rnn(x)[0], rnn(x)[0])
    assert "zoneout=0.2, recurrent_dropout=0.3" in repr(rnn)


# ---- errors ---------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,message", [
    (dict(zoneout=1.0), "zoneout rate of 'h' must lie in [0, 1), not 1.0"),
    (dict(zoneout={"c": -0.1}), "zoneout rate of 'c' must lie in [0, 1)"),
    (dict(zoneout="0.1"), "zoneout must be a rate or a dict of rates by state name"),
    (dict(zoneout={"q": 0.1}), "zoneout: lstm has no state 'q'; its states are ['h', 'c']"),
    (dict(zoneout={"h": 0.1, "q": 0}), "zoneout: lstm has no state 'q'"),
    (dict(recurrent_dropout={"c": 0.2}),
     "recurrent dropout: no matrix product of lstm reads state 'c', so there is nothing "
     "to drop; the states it can drop are ['h']"),
    (dict(recurrent_dropout=True), "recurrent_dropout must be a rate"),
])
def test_bad_rates_are_refused(kwargs, message):
    import generated.lstm as lstm
    with pytest.raises(ValueError, match=re.escape(message)):
        Layer(lstm, **kwargs)


def test_recurrent_dropout_of_a_cell_without_recurrent_products_is_refused():
    import generated.indrnn as indrnn
    with pytest.raises(ValueError, match="indrnn has no recurrent matrix product"):
        Layer(indrnn, recurrent_dropout=0.1)
    with pytest.raises(ValueError, match="recurrent_dropout takes a list of state names"):
        cellc.load(spec("lstm"), recurrent_dropout="h")
    Layer(indrnn, zoneout=0.1)          # zoneout applies to any state


def test_show_prints_the_variant_and_its_derived_backward(capsys):
    from cellc.tools.cli import main
    assert main(["show", str(spec("lstm")), "--zoneout", "h,c",
                 "--recurrent-dropout", "h"]) == 0
    text = capsys.readouterr().out
    assert "h′ = h ⊙ zoneout[h] + update[h] ⊙ (1 - zoneout[h])" in text
    assert "∂h = ∂dropped[h] ⊙ dropout[h]" in text          # the mask replayed in backward
    assert "∂zoneout" not in text and "∂dropout" not in text
    assert main(["show", str(spec("lstm")), "--recurrent-dropout", "c"]) == 1
    err = capsys.readouterr().err
    assert "lstm.toml: error: recurrent dropout: no matrix product of lstm reads state 'c'" in err


def test_a_variant_is_one_module_whatever_the_order_of_its_states():
    raw = spec("lstm").read_bytes()
    a = compile_bytes(raw, "lstm.toml", Regularizers.of(["h", "c"], ["h"])).source
    b = compile_bytes(raw, "lstm.toml", Regularizers.of(["c", "h", "c"], ["h"])).source
    assert a == b and "REGULARIZERS = {'zoneout': ('c', 'h'), 'recurrent_dropout': ('h',)}" in a
