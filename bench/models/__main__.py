"""`python -m bench.models`: parameters and FLOPs of every registered model, or one model's layers."""

from __future__ import annotations

import json
from dataclasses import asdict

from rich.console import Console
from rich.table import Table

from ..errors import Parser, cli
from . import Description, build, describe, names

_BASELINE_OPTIONS = ("num_classes", "in_channels", "image_size", "width")


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m bench.models", description=__doc__)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--in-channels", type=int, default=3)
    parser.add_argument("--head", default="small", help="VGG head: paper, light, small or gap")
    parser.add_argument("--bn", action="store_true", help="batch norm in the VGGs")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--layers", metavar="NAME", help="list the layers of this one model instead")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    options = dict(
        num_classes=args.num_classes,
        in_channels=args.in_channels,
        image_size=args.image_size,
        width=args.width,
        head=args.head,
        batch_norm=args.bn,
    )
    shape = (args.in_channels, args.image_size, args.image_size)

    def describe_model(name: str):
        is_vgg = name.startswith("vgg-")
        return describe(build(name, **{k: v for k, v in options.items() if is_vgg or k in _BASELINE_OPTIONS}), shape)

    if args.layers:
        described = describe_model(args.layers)
        if args.json:
            print(json.dumps([asdict(layer) for layer in described.layers]))
        else:
            _print_layers(args.layers, described)
        return 0

    rows = [(name, describe_model(name)) for name in names()]
    if args.json:
        print(json.dumps([{"name": name, "params": d.params, "flops": d.flops} for name, d in rows]))
        return 0
    table = Table(title=f"models at {'x'.join(map(str, shape))}, {args.num_classes} classes, VGG head {args.head}")
    table.add_column("model")
    table.add_column("params", justify="right")
    table.add_column("FLOPs", justify="right")
    for name, d in rows:
        table.add_row(name, _human(d.params), _human(d.flops, "FLOPs"))
    Console().print(table)
    return 0


def _print_layers(name: str, described: Description) -> None:
    table = Table(title=name)
    for column, justify in (("layer", "left"), ("type", "left"), ("output shape", "right"), ("params", "right")):
        table.add_column(column, justify=justify)
    for layer in described.layers:
        table.add_row(layer.name, layer.type, str(list(layer.output_shape)), f"{layer.params:,}")
    table.add_section()
    table.add_row("total", "", "", f"{described.params:,}")
    console = Console()
    console.print(table)
    console.print(f"forward: {_human(described.flops, 'FLOPs')} per image")


def _human(count: int, unit: str = "") -> str:
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if count >= scale:
            return f"{count / scale:.2f} {prefix}{unit}"
    return f"{count} {unit}".rstrip()


if __name__ == "__main__":
    cli(main)
