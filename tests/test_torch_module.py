"""cellc.torch.RNN as a torch module: custom operators under torch.compile, pickling,
the thread policy, distributed training, inference, torch.nn.LSTM's interface and the
correctness guards torch's own layers have."""
import copy
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from threadpoolctl import ThreadpoolController  # noqa: E402
from torch import nn  # noqa: E402

import cellc.torch as ct  # noqa: E402
from cellc.runtime import torch_ops  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
T, B, I, H = 5, 3, 4, 6


def spec(name):
    return str(ROOT / "specs" / f"{name}.toml")


def grads_of(model, x, hx=None):
    model.zero_grad()
    y, finals = model(x, hx)
    finals = finals if isinstance(finals, tuple) else (finals,)
    (y.square().sum() + sum(f.sum() for f in finals)).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


# ---- custom operators and torch.compile -----------------------------------------------
@pytest.mark.parametrize("name", ["lstm", "ln_lstm"])
def test_opcheck_passes(name):
    torch.manual_seed(0)
    rnn = ct.RNN(spec(name), I, H, 2, bidirectional=True, dtype=torch.float64)
    x = torch.randn(T, B, rnn.input_size, dtype=torch.float64, requires_grad=True)
    weights = [w.detach().requires_grad_() for w in rnn._weights()]
    args = (rnn._key, x, [], [], weights, None, torch.zeros((), dtype=torch.int64), False, True)
    result = torch.library.opcheck(torch.ops.cellc.layer_forward.default, args)
    assert set(result.values()) == {"SUCCESS"}, result


@pytest.mark.parametrize("name", ["phased_lstm", "cfc"])
def test_a_cell_of_several_inputs_takes_them_by_name(name):
    torch.manual_seed(9)
    rnn = ct.RNN(spec(name), 3, H, 2, bidirectional=True, dtype=torch.float64,
                 sizes={"M": 4} if name == "cfc" else None)
    stamp = rnn.layer.extra_inputs[0]
    x = torch.randn(T, B, 3, dtype=torch.float64, requires_grad=True)
    t = torch.cumsum(torch.rand(T, B, 1, dtype=torch.float64), 0).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, t: rnn(x, **{stamp: t})[0], (x, t))
    weights = [w.detach().requires_grad_() for w in rnn._weights()]
    args = (rnn._key, x, [t], [], weights, None, torch.zeros((), dtype=torch.int64), False, True)
    result = torch.library.opcheck(torch.ops.cellc.layer_forward.default, args)
    assert set(result.values()) == {"SUCCESS"}, result
    y1 = rnn(x[:, :1], **{stamp: t[:, :1]})[0]
    y0 = ct.RNN(spec(name), 3, H, 2, bidirectional=True, dtype=torch.float64, batch_first=True,
                sizes={"M": 4} if name == "cfc" else None)
    y0.load_state_dict(rnn.state_dict())
    torch.testing.assert_close(y0(x.transpose(0, 1)[:1], **{stamp: t.transpose(0, 1)[:1]})[0],
                               y1.transpose(0, 1))
    with pytest.raises(ValueError, match=f"{stamp}=... by name"):
        rnn(x)


class CharModel(nn.Module):
    def __init__(self, cell="gru"):
        super().__init__()
        self.emb = nn.Embedding(11, I)
        self.rnn = ct.RNN(spec(cell), I, H, 2)
        self.head = nn.Linear(H, 11)

    def forward(self, tokens):
        return self.head(self.rnn(self.emb(tokens))[0])


def test_torch_compile_fullgraph_matches_eager_and_compiles_once_per_shape_class():
    import torch._dynamo
    torch._dynamo.reset()
    torch.manual_seed(1)
    model = CharModel()
    tokens = torch.randint(0, 11, (T, B))
    explained = torch._dynamo.explain(model)(tokens)
    assert explained.graph_break_count == 0 and explained.graph_count == 1
    counters = torch._dynamo.utils.counters
    counters.clear()
    compiled = torch.compile(model, fullgraph=True, dynamic=True)
    for t, b in ((T, B), (T + 3, B), (T + 1, B + 2)):
        tokens = torch.randint(0, 11, (t, b))
        model.zero_grad()
        compiled(tokens).square().sum().backward()
        got = {n: p.grad.clone() for n, p in model.named_parameters()}
        model.zero_grad()
        model(tokens).square().sum().backward()
        for n, p in model.named_parameters():
            torch.testing.assert_close(got[n], p.grad, rtol=1e-5, atol=1e-5)
    assert counters["stats"]["unique_graphs"] == 1        # three shapes, one compile


# ---- pickling ------------------------------------------------------------------------
def test_deepcopy_torch_save_and_averaged_model(tmp_path):
    torch.manual_seed(2)
    rnn = ct.RNN(spec("lstm"), I, H, 2, bidirectional=True)
    x = torch.randn(T, B, I)
    for other in (copy.deepcopy(rnn), pickle.loads(pickle.dumps(rnn))):
        assert torch.equal(other(x)[0], rnn(x)[0])
        assert grads_of(other, x).keys() == grads_of(rnn, x).keys()
    torch.save(rnn, tmp_path / "rnn.pt")
    loaded = torch.load(tmp_path / "rnn.pt", weights_only=False)
    assert torch.equal(loaded(x)[0], rnn(x)[0])
    averaged = torch.optim.swa_utils.AveragedModel(rnn)
    averaged.update_parameters(rnn)
    assert torch.equal(averaged(x)[0], rnn(x)[0])


def test_a_pickled_layer_loads_in_a_fresh_process(tmp_path):
    torch.manual_seed(3)
    rnn = ct.RNN(spec("mgu"), I, H)
    x = torch.randn(T, B, I)
    torch.save((rnn, x, rnn(x)[0]), tmp_path / "m.pt")
    code = ("import sys, torch; sys.path.insert(0, sys.argv[2]); "
            "m, x, y = torch.load(sys.argv[1], weights_only=False); "
            "assert torch.equal(m(x)[0], y); print('same')")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "m.pt"), str(ROOT)],
                         capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == "same", out.stderr[-2000:]


# ---- threads ----------------------------------------------------------------------------
def test_cellc_blas_runs_on_one_thread_inside_torch_and_restores_numpy_s():
    def numpy_blas():
        libs = str(Path(np.__file__).parent) + ".libs"
        return [lib.num_threads for lib in ThreadpoolController().lib_controllers
                if lib.filepath.startswith(libs)]
    outside = numpy_blas()
    with torch_ops.blas_threads():
        inside = numpy_blas()
    assert inside == [1] and numpy_blas() == outside
    with pytest.raises(ValueError, match="positive integer"):
        ct.set_blas_threads(0)


# ---- distributed --------------------------------------------------------------------------
def test_ddp_two_processes_average_gradients_and_stay_in_sync(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "tests" / "ddp_check.py"), str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    reference = torch.load(tmp_path / "reference.pt")
    grads = [torch.load(tmp_path / f"grads{r}.pt") for r in (0, 1)]
    assert reference.keys() == grads[0].keys() and len(reference) == 2 * 2 * 10 + 2
    for name, g in reference.items():
        torch.testing.assert_close(grads[0][name], g, rtol=1e-10, atol=1e-12)
        assert torch.equal(grads[0][name], grads[1][name])
    params = [torch.load(tmp_path / f"params{r}.pt") for r in (0, 1)]
    apart = {n: (params[0][n] - params[1][n]).abs().max().item() for n in params[0]
             if not torch.equal(params[0][n], params[1][n])}
    assert not apart
    initial = torch.load(tmp_path / "initial.pt")
    assert all(not torch.equal(initial[n], params[0][n]) for n in initial)   # all trained


def test_ddp_example_trains_under_torchrun():
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node=2", str(ROOT / "examples" / "train_ddp.py"),
                          "--steps", "11", "--hidden", "16", "--length", "12"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    losses = [float(line.split()[3]) for line in out.stdout.splitlines()
              if line.startswith("step")]
    assert len(losses) == 2 and losses[-1] < losses[0], out.stdout + out.stderr[-2000:]


# ---- inference ---------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["no_grad", "inference_mode", "requires_grad_false"])
def test_inference_saves_nothing_and_matches_training_forward(mode):
    torch.manual_seed(4)
    rnn = ct.RNN(spec("lstm"), I, H, 2, bidirectional=True)
    x = torch.randn(T, B, I)
    expected = rnn(x)[0].detach()
    assert not torch_ops._CACHES        # freed with its graph, backward or not
    context = {"no_grad": torch.no_grad, "inference_mode": torch.inference_mode}.get(mode)
    if context is None:
        rnn.requires_grad_(False)
    held, layer = [], rnn.layer
    assert torch_ops._LAYERS[rnn._key] is layer         # the layer the operators run
    original = layer.forward

    def spy(*args, **kwargs):
        held.append(kwargs["need_grad"])
        return original(*args, **kwargs)
    layer.forward = spy
    try:
        with context() if context else torch.enable_grad():
            y = rnn(x)[0]
            assert not torch_ops._CACHES
    finally:
        del layer.forward
    assert held == [False]
    torch.testing.assert_close(y, expected, rtol=1e-6, atol=1e-6)


def test_the_cache_lives_as_long_as_the_graph():
    rnn = ct.RNN(spec("gru"), I, H)
    x = torch.randn(T, B, I, requires_grad=True)
    y, _ = rnn(x)
    assert len(torch_ops._CACHES) == 1
    y.sum().backward(retain_graph=True)
    y.sum().backward()                        # retain_graph: the cache serves twice
    del y
    assert not torch_ops._CACHES


# ---- torch.nn.LSTM's interface ---------------------------------------------------------------
def test_proj_size_is_refused_where_the_output_is_not_a_projection():
    with pytest.raises(ValueError, match="specs/lstmp.toml"):
        ct.RNN(spec("lstm"), 5, 6, proj_size=3)
    rnn = ct.RNN(spec("lstmp"), I, H, proj_size=3)
    y, (h, c) = rnn(torch.randn(T, B, I))
    assert y.shape == (T, B, 3) and h.shape == (1, B, 3) and c.shape == (1, B, H)


@pytest.mark.parametrize("kind,name", [("LSTM", "lstm"), ("GRU", "gru"), ("RNN", "elman")])
def test_bias_false_round_trips_through_torch(kind, name):
    torch.manual_seed(5)
    theirs = getattr(nn, kind)(I, H, 2, bias=False, bidirectional=True).double()
    ours = ct.RNN.from_torch(theirs, spec(name))
    assert ours.bias is False
    assert not any(n.split("_l")[0] in ours.cell.BIASES for n, _ in ours.named_parameters())
    x = torch.randn(T, B, I, dtype=torch.float64)
    torch.testing.assert_close(ours(x)[0], theirs(x)[0])
    back = ours.to_torch()
    assert back.bias is False and torch.equal(back(x)[0], theirs(x)[0])
    assert "b_" not in " ".join(ours.state_dict())


def test_bias_false_drops_a_spec_only_cells_biases():
    rnn = ct.RNN(spec("peephole_lstm"), I, H, bias=False)
    names = {n for n, _ in rnn.named_parameters()}
    assert not names & {f"{b}_l0" for b in ("b_i", "b_f", "b_g", "b_o")}
    assert {"p_i_l0", "p_f_l0", "p_o_l0", "W_xi_l0"} <= names       # peepholes are no bias
    assert torch.equal(rnn.b_i_l0, torch.zeros(H))                  # a zero buffer
    rnn(torch.randn(T, B, I))[0].sum().backward()


def test_dtype_device_and_defaults():
    old = torch.get_default_dtype()
    try:
        torch.set_default_dtype(torch.float64)
        assert ct.RNN(spec("gru"), I, H).W_xr_l0.dtype == torch.float64
    finally:
        torch.set_default_dtype(old)
    assert ct.RNN(spec("gru"), I, H, device="cpu").W_xr_l0.dtype == old
    with pytest.raises(ValueError, match="float32 and float64"):
        ct.RNN(spec("gru"), I, H, dtype=torch.float16)
    with pytest.raises(ValueError, match="on the CPU and on CUDA GPUs"):
        ct.RNN(spec("gru"), I, H, device="meta")
    with pytest.raises(ValueError, match="on the CPU and on CUDA GPUs; the input are on meta"):
        ct.RNN(spec("gru"), I, H)(torch.randn(T, B, I, device="meta"))
    half = ct.RNN(spec("gru"), I, H).to(torch.bfloat16)
    with pytest.raises(ValueError, match=r"float32 and float64.*\.float\(\)"):
        half(torch.randn(T, B, I, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="pass input.to"):
        ct.RNN(spec("gru"), I, H)(torch.randn(T, B, I, dtype=torch.float64))


def test_unbatched_input_matches_a_batch_of_one():
    torch.manual_seed(6)
    rnn = ct.RNN(spec("lstm"), I, H, 2, batch_first=True)
    x, h0, c0 = torch.randn(T, I), torch.randn(2, H), torch.randn(2, H)
    y, (h, c) = rnn(x, (h0, c0))
    y1, (h1, c1) = rnn(x[None], (h0[:, None], c0[:, None]))
    assert y.shape == (T, H) and h.shape == (2, H)
    assert torch.equal(y, y1[0]) and torch.equal(h, h1[:, 0]) and torch.equal(c, c1[:, 0])
    rnn.flatten_parameters()


def test_merge_sum_does_not_export_and_missing_sizes_say_how(tmp_path):
    with pytest.raises(ValueError, match="merge='sum' has no torch.nn counterpart"):
        ct.RNN(spec("lstm"), I, H, bidirectional=True, merge="sum").to_torch()
    path = tmp_path / "bottleneck.toml"
    path.write_text('name = "bottleneck"\ninputs = ["x"]\nstates = ["h"]\n'
                    'parameters = ["W", "U", "V", "b"]\n'
                    'equations = "h\' = tanh(x @ W + (h @ U) @ V + b)"\n'
                    '[shapes]\nU = ["H", "M"]\n')
    with pytest.raises(ValueError, match=r"\['M'\].*sizes=\{'M': 16\}"):
        ct.RNN(str(path), I, H)
    with pytest.raises(ValueError, match="no dimension 'Q'"):
        ct.RNN(str(path), I, H, sizes={"M": 2, "Q": 3})
    y, h = ct.RNN(str(path), I, H, sizes={"M": 2})(torch.randn(T, B, I))
    assert y.shape == (T, B, H)


# ---- correctness guards ----------------------------------------------------------------
def test_in_place_edits_of_saved_tensors_raise_as_for_torch_layers():
    torch.manual_seed(7)
    for edit in ("input", "weight", "output"):
        rnn = ct.RNN(spec("lstm"), I, H)
        x = torch.randn(T, B, I)
        y, _ = rnn(x)
        with torch.no_grad():
            {"input": x, "weight": rnn.W_xi_l0, "output": y}[edit].add_(1.0)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            y.sum().backward()


def test_double_backward_gives_the_once_differentiable_error():
    rnn = ct.RNN(spec("gru"), I, H, dtype=torch.float64)
    x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)
    (gx,) = torch.autograd.grad(rnn(x)[0].square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice a function that was marked "
                                           "with @once_differentiable"):
        gx.sum().backward()


def test_parametrizations_see_the_parameters():
    torch.manual_seed(8)
    rnn = ct.RNN(spec("lstm"), I, H, dtype=torch.float64)
    plain = copy.deepcopy(rnn)
    nn.utils.parametrizations.weight_norm(rnn, "W_hi_l0")
    x = torch.randn(T, B, I, dtype=torch.float64)
    torch.testing.assert_close(rnn(x)[0], plain(x)[0])
    rnn(x)[0].sum().backward()
    original = rnn.parametrizations.W_hi_l0.original1
    assert original.grad is not None and original.grad.abs().sum() > 0
    assert np.isfinite(original.grad.numpy()).all()


def test_biases_are_what_torch_calls_biases():
    import importlib
    checked = 0
    for path in sorted((ROOT / "specs").glob("*.toml")):
        m = importlib.import_module(f"generated.{path.stem}")
        if m.TORCH:
            mapped = {p for p, terms in m.TORCH["params"].items()
                      if all(t[0].startswith("bias") for t in terms)}
            assert set(m.BIASES) == mapped, path.stem
            checked += 1
    assert checked >= 5
    phased, peephole = (importlib.import_module(f"generated.{n}")
                        for n in ("phased_lstm", "peephole_lstm"))
    assert "shift" not in phased.BIASES and "b_c" in phased.BIASES     # t - shift: no bias
    assert not {"p_i", "p_f", "p_o"} & set(peephole.BIASES)            # gains, not biases
