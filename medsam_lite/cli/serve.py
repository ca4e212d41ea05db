"""``medsam-lite serve``: the interactive annotator in the browser (FastAPI + uvicorn, local only by default)."""
from __future__ import annotations

import argparse

from ..backends import PRECISIONS, choices  # the registry: no runtime is imported, --help stays light


def register(subparsers: "argparse._SubParsersAction") -> None:
    p = subparsers.add_parser(
        "serve",
        help="interactive box-prompted annotator in the browser",
        description="Start a local web app: open a case (a file under PATH, or an upload), draw boxes, propagate in 3D, "
        "save the label map. Files are read only under the PATHs given here (symlinks and .. resolved first). "
        "Binds to 127.0.0.1 unless --host says otherwise; answers only loopback Host names, --host and --allowed-host; "
        "refuses cross-site requests.",
    )
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help="case files or folders the page may open (default: none; uploads still work)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="a Host header name to answer besides 127.0.0.1, localhost, [::1] and --host (repeatable; "
                   "e.g. this machine's name when binding to 0.0.0.0). Other names are refused (DNS rebinding)")
    p.add_argument("--model", default=None,
                   help="pretrained name (lite_medsam, repvit_m0_6_lite) or checkpoint path; default: best shipped")
    p.add_argument("--backend", choices=choices(), default="auto", metavar="BACKEND[:PRECISION]",
                   help="inference backend, as for 'medsam-lite segment' (default auto)")
    p.add_argument("--precision", choices=("auto",) + PRECISIONS, default="auto",
                   help="precision, as for 'medsam-lite segment' (default auto: what the agreement gate allows)")
    p.add_argument("--output-root", default=".", metavar="DIR",
                   help="masks may be saved only in folders under DIR (default: the current folder)")
    p.add_argument("--max-upload-mb", type=float, default=512.0, help="upload size limit in MiB (default 512)")
    p.add_argument("--embedding-cache-mb", type=float, default=2048.0,
                   help="memory for cached slice embeddings, 4 MiB per slice (default 2048)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import ipaddress
    import sys
    from pathlib import Path

    from ..errors import InputError
    from ..serve.app import serve
    from ..serve.config import ServeConfig
    from ..serve.security import allowed_hosts

    roots = []
    for raw in args.paths:
        path = Path(raw).expanduser()
        if not path.exists():
            raise InputError("path not found", raw)
        roots.append(path.resolve())
    if not 0 < args.port < 65536:
        raise InputError(f"--port must be 1..65535, got {args.port}")
    try:
        loopback = ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        loopback = args.host == "localhost"
    if not loopback:
        print(f"medsam-lite serve: warning: binding to {args.host}: other machines can reach this server and read "
              "files under the given paths; it answers only the Host names 127.0.0.1, localhost, [::1], --host and "
              "--allowed-host", file=sys.stderr)
    config = ServeConfig(roots=roots, output_root=Path(args.output_root), model=args.model, backend=args.backend,
                         precision=args.precision,
                         host=args.host, port=args.port, allowed_hosts=tuple(args.allowed_host),
                         max_upload_mb=args.max_upload_mb,
                         embedding_cache_mb=args.embedding_cache_mb)
    allowed_hosts(config)  # a bad --allowed-host is one line now, not after the model loaded
    print(f"medsam-lite serve: http://{args.host}:{args.port}/  (Ctrl+C stops)", file=sys.stderr)
    serve(config)
    return 0
