"""The certificate signing key: make one, or show which keys verifiers are given.

    python -m tools.signing_key generate data/certificate-signing-key.pem [--bits 3072]
    python -m tools.signing_key show data/certificate-signing-key.pem

``generate`` writes a new RSA private key (PEM, mode 0600) and refuses to overwrite a file.
Rotating: generate a new key, point ``CERTIFICATE_SIGNING_KEY`` at it, restart the certificates
service; it signs with the new key from then on, and ``/.well-known/jwks.json`` keeps publishing
every key that signed before, so earlier credentials still verify. Keep the old file out of reach
(or destroy it); only its public half is needed from then on, and the database has it.
``show`` prints the key's ``kid`` thumbprint and public JWK (never the private part).
"""

from __future__ import annotations

import argparse
import json
import sys

from services.credentials import CredentialError, generate_signing_key, load_signing_key


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.signing_key", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    generate = commands.add_parser("generate", help="write a new RSA private key (PEM, 0600)")
    generate.add_argument("path")
    generate.add_argument("--bits", type=int, default=3072, choices=(2048, 3072, 4096))
    show = commands.add_parser("show", help="the key's thumbprint and public JWK")
    show.add_argument("path")
    show.add_argument("--base-url", default="http://localhost:8000", help="PUBLIC_BASE_URL, for the kid")
    args = parser.parse_args(argv)
    try:
        if args.command == "generate":
            generate_signing_key(args.path, bits=args.bits)
            print(f"mensageria: wrote a new certificate signing key to {args.path}", file=sys.stderr)
        else:
            key = load_signing_key(args.path, f"{args.base_url.rstrip('/')}/.well-known/jwks.json")
            print(json.dumps({"thumbprint": key.thumbprint, "jwk": key.public_jwk}, indent=2))
    except FileExistsError:
        print(f"mensageria: {args.path} exists; a signing key is never overwritten", file=sys.stderr)
        return 1
    except (CredentialError, OSError) as error:
        print(f"mensageria: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
