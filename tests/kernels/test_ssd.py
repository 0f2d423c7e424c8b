import pytest
import torch

from kernels import causal_conv1d, causal_conv1d_step, selective_scan, ssd_chunked, ssd_reference


def random_scan_inputs(batch, length, heads, head_dim, groups, state, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, length, heads, head_dim, generator=generator)
    dt = torch.rand(batch, length, heads, generator=generator) * 0.5 + 0.01
    A = -(torch.rand(heads, generator=generator) * 2 + 0.1)
    B = torch.randn(batch, length, groups, state, generator=generator)
    C = torch.randn(batch, length, groups, state, generator=generator)
    D = torch.randn(heads, generator=generator)
    return x, dt, A, B, C, D


@pytest.mark.parametrize("length", [1, 7, 16, 37, 100])
@pytest.mark.parametrize("chunk_size", [8, 16])
@pytest.mark.parametrize("with_initial_state", [False, True])
def test_chunked_scan_matches_recurrence(length, chunk_size, with_initial_state):
    x, dt, A, B, C, D = random_scan_inputs(2, length, 4, 8, 2, 16, seed=length)
    initial = torch.randn(2, 4, 8, 16) if with_initial_state else None

    y_chunked, final_chunked = ssd_chunked(x, dt, A, B, C, chunk_size, D=D, initial_state=initial)
    y_reference, final_reference = ssd_reference(x, dt, A, B, C, D=D, initial_state=initial)

    torch.testing.assert_close(y_chunked, y_reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(final_chunked, final_reference, atol=1e-5, rtol=1e-5)


def test_chunked_scan_continues_across_calls():
    x, dt, A, B, C, D = random_scan_inputs(1, 53, 4, 8, 1, 16, seed=3)
    y_whole, final_whole = ssd_chunked(x, dt, A, B, C, 16, D=D)

    y_first, state = ssd_chunked(x[:, :20], dt[:, :20], A, B[:, :20], C[:, :20], 16, D=D)
    y_second, final_split = ssd_chunked(x[:, 20:], dt[:, 20:], A, B[:, 20:], C[:, 20:], 16, D=D, initial_state=state)

    torch.testing.assert_close(torch.cat([y_first, y_second], dim=1), y_whole, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(final_split, final_whole, atol=1e-5, rtol=1e-5)


def test_scan_dispatch_uses_torch_path_on_cpu():
    x, dt, A, B, C, D = random_scan_inputs(1, 10, 2, 4, 1, 8)
    y, final = selective_scan(x, dt, A, B, C, 4, D=D)
    y_reference, final_reference = ssd_reference(x, dt, A, B, C, D=D)
    torch.testing.assert_close(y, y_reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(final, final_reference, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"x": torch.zeros(1, 5, 4)}, "x must be"),
        ({"dt": torch.zeros(1, 5, 3)}, "dt must be"),
        ({"A": torch.zeros(3)}, "A must be"),
        ({"B": torch.zeros(1, 5, 3, 8), "C": torch.zeros(1, 5, 3, 8)}, "multiple of groups"),
        ({"initial_state": torch.zeros(1, 4, 4, 7)}, "initial_state must be"),
    ],
)
def test_scan_rejects_bad_shapes(bad, message):
    x, dt, A, B, C, D = random_scan_inputs(1, 5, 4, 4, 2, 8)
    arguments = {"x": x, "dt": dt, "A": A, "B": B, "C": C, "chunk_size": 4, "D": D, "initial_state": None}
    arguments.update(bad)
    with pytest.raises(ValueError, match=message):
        ssd_chunked(**arguments)


def test_conv_step_matches_whole_sequence():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(2, 6, 11, generator=generator)
    weight = torch.randn(6, 4, generator=generator)
    bias = torch.randn(6, generator=generator)
    initial = torch.randn(2, 6, 3, generator=generator)

    y_whole, final_whole = causal_conv1d(x, weight, bias, initial)
    state, outputs = initial, []
    for t in range(x.shape[-1]):
        y, state = causal_conv1d_step(x[:, :, t], weight, bias, state)
        outputs.append(y)

    torch.testing.assert_close(torch.stack(outputs, dim=-1), y_whole, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(state, final_whole)


def test_conv_matches_torch_conv1d_from_zero_state():
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(1, 5, 9, generator=generator)
    conv = torch.nn.Conv1d(5, 5, 4, groups=5, padding=3)
    expected = torch.nn.functional.silu(conv(x)[..., :9])
    y, _ = causal_conv1d(x, conv.weight[:, 0], conv.bias)
    torch.testing.assert_close(y, expected, atol=1e-6, rtol=1e-6)
