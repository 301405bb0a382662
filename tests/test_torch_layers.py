"""cellc.torch.RNN against torch.nn.LSTM/GRU/RNN with imported weights (stacked,
bidirectional, packed, batch_first: outputs, final states and every gradient), gradcheck
for several specs, and the module working for every spec."""
import pytest
from conftest import ONE_INPUT_SPECS as SPECS

torch = pytest.importorskip("torch")
ct = pytest.importorskip("cellc.torch")
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

I, H, T, B = 3, 4, 6, 5
LENGTHS = torch.tensor([4, 6, 1, 6, 3])
KINDS = {"lstm": lambda **kw: torch.nn.LSTM(I, H, **kw),
         "gru": lambda **kw: torch.nn.GRU(I, H, **kw),
         "elman": lambda **kw: torch.nn.RNN(I, H, nonlinearity="tanh", **kw)}


def module_of(name):
    import importlib
    return importlib.import_module(f"generated.{name}")


def err(a, b):
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def run(layer, x, hx, packed, batch_first):
    """(loss, output) with a loss that reads every output and final state."""
    inp = x
    if packed:
        inp = pack_padded_sequence(x, LENGTHS, batch_first=batch_first, enforce_sorted=False)
    y, final = layer(inp, hx)
    if packed:
        y, _ = pad_packed_sequence(y, batch_first=batch_first, total_length=T)
    final = final if isinstance(final, tuple) else (final,)
    w = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape)
    loss = (w * y).sum() + sum((f * f).sum() for f in final)
    return loss, y, final


@pytest.mark.parametrize("name", KINDS)
@pytest.mark.parametrize("layers, bidirectional, packed, batch_first", [
    (1, False, False, False), (2, True, False, False), (2, True, True, False),
    (3, False, True, True)])
def test_matches_torch_nn(name, layers, bidirectional, packed, batch_first):
    torch.manual_seed(0)
    rnn = KINDS[name](num_layers=layers, bidirectional=bidirectional,
                      batch_first=batch_first).double()
    ours = ct.RNN.from_torch(rnn, module_of(name))
    cell = ours.cell
    D = 2 if bidirectional else 1
    shape = (B, T, I) if batch_first else (T, B, I)
    x = torch.randn(shape, dtype=torch.float64)
    hx = tuple(torch.randn(layers * D, B, H, dtype=torch.float64) for _ in cell.STATES)
    results = []
    for layer in (rnn, ours):
        xs = x.clone().requires_grad_()
        hs = tuple(h.clone().requires_grad_() for h in hx)
        loss, y, final = run(layer, xs, hs if len(hs) > 1 else hs[0], packed, batch_first)
        loss.backward()
        results.append((y, final, xs.grad, [h.grad for h in hs]))
    (y0, f0, dx0, dh0), (y1, f1, dx1, dh1) = results
    assert err(y1, y0) < 1e-12
    assert all(err(a, b) < 1e-12 for a, b in zip(f1, f0))
    assert err(dx1, dx0) < 1e-12
    assert all(err(a, b) < 1e-12 for a, b in zip(dh1, dh0))
    expected = ct.grads_from_torch(cell, rnn)
    for pname, p in ours.named_parameters():
        assert err(p.grad, torch.from_numpy(expected[pname])) < 1e-12, pname


@pytest.mark.parametrize("name", KINDS)
def test_round_trip_to_torch(name):
    torch.manual_seed(1)
    ours = ct.RNN(module_of(name), I, H, num_layers=2, bidirectional=True, dtype=torch.float64)
    rnn = ours.to_torch()
    x = torch.randn(T, B, I, dtype=torch.float64)
    assert err(ours(x)[0], rnn(x)[0]) < 1e-12


@pytest.mark.parametrize("name", ["lstm", "gru_cho", "peephole_lstm", "elman"])
def test_gradcheck(name):
    torch.manual_seed(2)
    ours = ct.RNN(module_of(name), 2, 3, num_layers=2, bidirectional=True, dtype=torch.float64)
    x = torch.randn(4, 3, 2, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([4, 2, 3])
    hx = tuple(torch.randn(4, 3, 3, dtype=torch.float64, requires_grad=True)
               for _ in ours.cell.STATES)
    names = [n for n, _ in ours.named_parameters()]
    params = [p for _, p in ours.named_parameters()]

    def f(x, *tensors):
        states, weights = tensors[:len(hx)], tensors[len(hx):]
        packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
        y, final = torch.func.functional_call(ours, dict(zip(names, weights)),
                                              (packed, states if len(states) > 1 else states[0]))
        return (pad_packed_sequence(y)[0], *(final if isinstance(final, tuple) else (final,)))

    assert torch.autograd.gradcheck(f, (x, *hx, *params), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_every_spec_trains_and_saves(spec, tmp_path):
    torch.manual_seed(3)
    ours = ct.RNN(module_of(spec.stem), I, H, num_layers=2, bidirectional=True, dropout=0.25,
                  batch_first=True)
    assert all(n.endswith(("_l0", "_l1", "_l0_reverse", "_l1_reverse"))
               for n, _ in ours.named_parameters())
    opt = torch.optim.SGD(ours.parameters(), lr=0.1)
    x = torch.randn(B, T, I)
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    y, _ = ours(x)
    assert y.shape == (B, T, 2 * H)
    y.square().mean().backward()
    opt.step()
    assert any(not torch.equal(before[k], v) for k, v in ours.state_dict().items())
    torch.save(ours.state_dict(), tmp_path / "rnn.pt")
    again = ct.RNN(module_of(spec.stem), I, H, num_layers=2, bidirectional=True, batch_first=True)
    again.load_state_dict(torch.load(tmp_path / "rnn.pt"))
    ours.eval(), again.eval()
    assert torch.equal(ours(x)[0], again(x)[0])


def test_dropout_is_seeded_and_only_in_training():
    ours = ct.RNN(module_of("lstm"), I, H, num_layers=2, dropout=0.5)
    x = torch.randn(T, B, I)
    torch.manual_seed(4)
    a = ours(x)[0]
    torch.manual_seed(4)
    b = ours(x)[0]
    c = ours(x)[0]
    assert torch.equal(a, b) and not torch.equal(a, c)
    ours.eval()
    assert torch.equal(ours(x)[0], ours(x)[0])


def test_in_place_edit_of_an_output_is_refused():
    ours = ct.RNN(module_of("lstm"), I, H)
    y, _ = ours(torch.randn(T, B, I))
    y.add_(1)
    with pytest.raises(RuntimeError, match="inplace"):
        y.sum().backward()


def test_wrong_torch_module_is_refused():
    with pytest.raises(ValueError, match="maps torch.nn.LSTM, not torch.nn.GRU"):
        ct.RNN.from_torch(torch.nn.GRU(I, H), module_of("lstm"))
    with pytest.raises(ValueError, match="no \\[torch\\] table"):
        ct.RNN.from_torch(torch.nn.LSTM(I, H), module_of("peephole_lstm"))
    with pytest.raises(ValueError, match="nonlinearity"):
        ct.RNN.from_torch(torch.nn.RNN(I, H, nonlinearity="relu"), module_of("elman"))
