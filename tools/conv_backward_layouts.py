"""Time PyTorch's ``convolution_backward`` on contiguous and on channels-last tensors.

inductor's layout optimization gives the convolutions of a compiled graph channels-last
tensors; on a CPU some shapes then take far longer in the backward (README, Compiled training
steps). This measures one shape both ways, in this process, so a slow compiled training step can
be traced to its convolution.

Examples:
    python tools/conv_backward_layouts.py                      # CrossFormer's patch embedding
    python tools/conv_backward_layouts.py --input 2 64 128 128 --out-channels 64 --kernel 5 \\
        --stride 1 --padding 2 --groups 64
"""
from __future__ import annotations

import argparse
import time

import torch


def time_backward(input_shape: tuple[int, ...], out_channels: int, kernel: int, stride: int, padding: int,
                  groups: int, memory_format: torch.memory_format, repeats: int) -> float:
    """Median milliseconds of one ``convolution_backward`` (input, weight and bias gradients)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(*input_shape, generator=generator)
    weight = torch.randn(out_channels, input_shape[1] // groups, kernel, kernel, generator=generator)
    grad = torch.randn_like(torch.nn.functional.conv2d(x, weight, stride=stride, padding=padding, groups=groups))
    x, weight, grad = (t.contiguous(memory_format=memory_format) for t in (x, weight, grad))

    def backward() -> None:
        torch.ops.aten.convolution_backward(grad, x, weight, [out_channels], (stride, stride), (padding, padding),
                                            (1, 1), False, (0, 0), groups, (True, True, True))
    backward()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        backward()
        times.append(time.perf_counter() - start)
    return 1e3 * sorted(times)[len(times) // 2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--input', type=int, nargs=4, default=[2, 3, 512, 512], metavar=('B', 'C', 'H', 'W'))
    parser.add_argument('--out-channels', type=int, default=8)
    parser.add_argument('--kernel', type=int, default=32)
    parser.add_argument('--stride', type=int, default=4)
    parser.add_argument('--padding', type=int, default=14)
    parser.add_argument('--groups', type=int, default=1)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--repeats', type=int, default=3)
    args = parser.parse_args(argv)
    if args.input[1] % args.groups or args.out_channels % args.groups:
        parser.error(f'--groups {args.groups} must divide the input channels ({args.input[1]}) and --out-channels')
    torch.set_num_threads(args.threads)
    shape = tuple(args.input)
    print(f'convolution_backward, input {shape}, {args.out_channels} filters {args.kernel}x{args.kernel}, '
          f'stride {args.stride}, padding {args.padding}, groups {args.groups}, {args.threads} thread(s):')
    for name, fmt in (('contiguous', torch.contiguous_format), ('channels_last', torch.channels_last)):
        ms = time_backward(shape, args.out_channels, args.kernel, args.stride, args.padding, args.groups, fmt,
                           args.repeats)
        print(f'  {name:13s} {ms:9.1f} ms')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
