"""The `lineguard` command and its subcommands."""

import argparse
import sys
from pathlib import Path

from lineguard import __version__
from shared.logging import configure_logging, get_logger

log = get_logger("lineguard")


def _add_architecture(parser: argparse.ArgumentParser) -> None:
    from detector.model import ModelConfig

    defaults = ModelConfig()
    group = parser.add_argument_group("architecture")
    group.add_argument("--backbone", choices=["efficientnet-lite0", "resnet18"],
                       default=defaults.backbone, help="frozen ImageNet teacher")
    group.add_argument("--student", choices=["cot", "residual", "symmetric"],
                       default=defaults.student,
                       help="cot: residual student with CoT layers (asymmetric, the paper); "
                            "residual: the same without CoT; symmetric: STPM's teacher copy")
    group.add_argument("--teacher-norm", choices=["moving_average", "frozen"],
                       default=defaults.teacher_norm,
                       help="teacher BatchNorm statistics: moving average over the product's "
                            "images during training (EMAN-style), or frozen ImageNet ones")
    group.add_argument("--eman-momentum", type=float, default=defaults.eman_momentum)
    group.add_argument("--image-size", type=int, default=defaults.image_size)
    group.add_argument("--resize", choices=["stretch", "pad"], default=defaults.resize)
    group.add_argument("--fusion", choices=["product", "mean", "weighted"],
                       default=defaults.fusion)
    group.add_argument("--fusion-weights", type=float, nargs=3,
                       default=list(defaults.fusion_weights))
    group.add_argument("--sigma", type=float, default=defaults.smoothing_sigma,
                       help="Gaussian smoothing of the fused map (0: none)")


def cmd_train(args: argparse.Namespace) -> int:
    from detector.model import ModelConfig
    from detector.training import TrainOptions, train

    config = ModelConfig(
        backbone=args.backbone, student=args.student, teacher_norm=args.teacher_norm,
        eman_momentum=args.eman_momentum, image_size=args.image_size, resize=args.resize,
        fusion=args.fusion, fusion_weights=tuple(args.fusion_weights),
        smoothing_sigma=args.sigma)
    options = TrainOptions(
        epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer,
        learning_rate=args.lr, validation_fraction=args.validation_fraction, seed=args.seed,
        device=args.device, precision=args.precision, teacher_weights=args.teacher_weights,
        calibrate_on_test=args.calibrate_on_test, patience=args.patience, limit=args.limit)
    try:
        train(args.data, args.out, config, options)
    except KeyboardInterrupt:
        print(f"interrupted: the best model so far (if any epoch finished) is in {args.out}",
              file=sys.stderr)
        return 130
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from detector.evaluation.report import evaluate

    report = evaluate(args.model, args.data, args.out or Path(args.model) / "evaluation",
                      device=args.device, precision=args.precision, batch_size=args.batch_size,
                      heatmaps=args.heatmaps)
    overall = report["overall"]
    print(" ".join(f"{k}={v:.3f}" for k, v in overall.items() if isinstance(v, float)))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from detector.export import export_onnx

    meta = export_onnx(args.model, args.out, opset=args.opset)
    print(f"wrote {meta['onnx']}: scores within {meta['max_score_relative_error']:.1e} "
          f"(relative), maps within {meta['max_map_scaled_error']:.1e} of PyTorch")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from detector.datasets import export_elpv

    counts = export_elpv(args.out, limit=args.limit, seed=args.seed)
    print(f"wrote ELPV to {args.out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from lineguard.demo import run_demo

    run_demo(args.out, small=args.small, data=args.data, stream=not args.no_stream)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lineguard", description=__doc__)
    parser.add_argument("--version", action="version", version=f"lineguard {__version__}")
    parser.add_argument("--log-json", action="store_true", help="JSON log lines")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model on good images")
    train.add_argument("data", type=Path, help="MVTec AD layout (train/good) or image folder")
    train.add_argument("--out", type=Path, required=True, help="model directory to write")
    _add_architecture(train)
    from detector.training import TrainOptions

    defaults = TrainOptions()
    train.add_argument("--epochs", type=int, default=defaults.epochs)
    train.add_argument("--batch-size", type=int, default=defaults.batch_size)
    train.add_argument("--optimizer", choices=["sgd", "adam"], default=defaults.optimizer)
    train.add_argument("--lr", type=float, default=None)
    train.add_argument("--validation-fraction", type=float, default=defaults.validation_fraction)
    train.add_argument("--seed", type=int, default=defaults.seed)
    train.add_argument("--device", default=defaults.device)
    train.add_argument("--precision", choices=["float32", "bfloat16"], default=defaults.precision)
    train.add_argument("--teacher-weights", type=Path, default=None,
                       help="ImageNet weights file of the teacher (required for resnet18)")
    train.add_argument("--calibrate-on-test", action="store_true",
                       help="place the threshold at F1-max on the labelled test/ images")
    train.add_argument("--patience", type=int, default=0)
    train.add_argument("--limit", type=int, default=None, help="use at most N good images")
    train.set_defaults(func=cmd_train)

    evaluate = commands.add_parser("evaluate", help="metrics, report and heatmaps on test data")
    evaluate.add_argument("model", type=Path)
    evaluate.add_argument("data", type=Path, help="MVTec AD layout with test/ (ground_truth/)")
    evaluate.add_argument("--out", type=Path, default=None,
                          help="report folder (default MODEL/evaluation)")
    evaluate.add_argument("--device", default="cpu")
    evaluate.add_argument("--precision", choices=["float32", "bfloat16", "float16"],
                          default="float32")
    evaluate.add_argument("--batch-size", type=int, default=16)
    evaluate.add_argument("--heatmaps", type=int, default=12)
    evaluate.set_defaults(func=cmd_evaluate)

    export = commands.add_parser("export", help="export a model for other runtimes")
    export.add_argument("model", type=Path)
    export.add_argument("--format", choices=["onnx"], default="onnx")
    export.add_argument("--out", type=Path, default=None)
    export.add_argument("--opset", type=int, default=17)
    export.set_defaults(func=cmd_export)

    data = commands.add_parser("data", help="write a data set that installs with the package")
    data.add_argument("name", choices=["elpv"])
    data.add_argument("--out", type=Path, required=True)
    data.add_argument("--limit", type=int, default=None, help="at most N images per folder")
    data.add_argument("--seed", type=int, default=0)
    data.set_defaults(func=cmd_data)

    demo = commands.add_parser("demo", help="train, evaluate, export, then stream through the pipeline")
    demo.add_argument("--small", action="store_true", help="a quick run on few, small images")
    demo.add_argument("--data", type=Path, default=None, help="an MVTec AD layout instead of ELPV")
    demo.add_argument("--out", type=Path, default=Path("runs/demo"))
    demo.add_argument("--no-stream", action="store_true",
                      help="stop after training, evaluation and export (no broker, no Redis)")
    demo.set_defaults(func=cmd_demo)

    from lineguard.service_commands import add_service_commands

    add_service_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(json_output=True if args.log_json else None)
    from detector.model.teacher import TeacherWeightsError
    from detector.store import ModelLoadError
    from lineguard.service_commands import run_errors

    codes = run_errors()
    try:
        return args.func(args)
    except tuple(codes) as error:
        log.error(str(error))
        print(f"lineguard: error: {error}", file=sys.stderr)
        return codes[type(error)]
    except (ModelLoadError, TeacherWeightsError, FileNotFoundError, ValueError) as error:
        log.error(str(error))
        print(f"lineguard: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
