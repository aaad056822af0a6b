#!/usr/bin/env python3
"""A Weft client on gRPC's C core (PyPI `grpcio`), written from the README's protocol page.

Connects to one orderer over mutual TLS, submits `--count` signed envelopes with Submit, then
follows Deliver from block 0 until every submitted tx id has been seen in a block. Stubs are generated at run
time from shared-proto/proto with grpcio-tools; signing uses `cryptography`'s Ed25519:

    signature = Ed25519(key, b"weft/envelope/v1\\x00" + payload)     (README: tag ends with NUL)
    tx_id     = hex(SHA-256(nonce + creator))

Prints one `RESULT {...}` JSON line at the end; exits non-zero with a reason on any failure.
Used by orderer/tests/grpcio_client.rs.
"""

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time

ENVELOPE_TAG = b"weft/envelope/v1\x00"


def generate_stubs(proto_dir, out_dir):
    from grpc_tools import protoc

    protos = ["common.proto", "msp.proto", "orderer.proto"]
    args = ["protoc", f"-I{proto_dir}", f"--python_out={out_dir}", f"--grpc_python_out={out_dir}"]
    if protoc.main(args + protos) != 0:
        sys.exit(f"grpc_tools.protoc failed on {proto_dir}")
    sys.path.insert(0, out_dir)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--addr", required=True, help="host:port of the orderer's client port")
    p.add_argument("--ca", required=True, help="PEM bundle of TLS CA certificates")
    p.add_argument("--tls-cert", required=True)
    p.add_argument("--tls-key", required=True)
    p.add_argument("--msp-id", required=True)
    p.add_argument("--sign-cert", required=True, help="PEM signing certificate (Ed25519)")
    p.add_argument("--sign-key", required=True, help="PKCS#8 PEM Ed25519 private key")
    p.add_argument("--channel", required=True)
    p.add_argument("--proto-dir", required=True)
    p.add_argument("--count", type=int, default=5)
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per call")
    a = p.parse_args()

    import grpc
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import Encoding

    out = tempfile.mkdtemp(prefix="weft-stubs-")
    generate_stubs(a.proto_dir, out)
    import common_pb2
    import msp_pb2
    import orderer_pb2
    import orderer_pb2_grpc

    read = lambda path: open(path, "rb").read()
    credentials = grpc.ssl_channel_credentials(
        root_certificates=read(a.ca),
        private_key=read(a.tls_key),
        certificate_chain=read(a.tls_cert),
    )
    cert_der = x509.load_pem_x509_certificate(read(a.sign_cert)).public_bytes(Encoding.DER)
    key = serialization.load_pem_private_key(read(a.sign_key), password=None)
    creator = msp_pb2.SerializedIdentity(mspid=a.msp_id, id_bytes=cert_der).SerializeToString()

    def envelope(header_type, data):
        nonce = os.urandom(24)
        payload = common_pb2.Payload(
            header=common_pb2.Header(
                channel_header=common_pb2.ChannelHeader(
                    type=header_type,
                    channel_id=a.channel,
                    tx_id=hashlib.sha256(nonce + creator).hexdigest(),
                    timestamp_unix_ms=int(time.time() * 1000),
                ),
                signature_header=common_pb2.SignatureHeader(creator=creator, nonce=nonce),
            ),
            data=data,
        ).SerializeToString()
        signature = key.sign(ENVELOPE_TAG + payload)
        return common_pb2.Envelope(payload=payload, signature=signature)

    def tx_id_of(env_bytes):
        env = common_pb2.Envelope.FromString(env_bytes)
        return common_pb2.Payload.FromString(env.payload).header.channel_header.tx_id

    with grpc.secure_channel(a.addr, credentials) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=a.timeout)
        except grpc.FutureTimeoutError:
            sys.exit(f"TLS/HTTP2 connection to {a.addr} not ready within {a.timeout} s "
                     "(handshake refused?)")
        stub = orderer_pb2_grpc.AtomicBroadcastStub(channel)

        submitted = []
        for i in range(a.count):
            env = envelope(common_pb2.MESSAGE, f"from grpcio #{i}".encode())
            tx_id = tx_id_of(env.SerializeToString())
            deadline = time.time() + a.timeout
            while True:
                try:
                    r = stub.Submit(env, timeout=a.timeout)
                    break
                except grpc.RpcError as e:
                    # No leader known yet: retryable.
                    if e.code() == grpc.StatusCode.UNAVAILABLE and time.time() < deadline:
                        time.sleep(0.1)
                        continue
                    sys.exit(f"Submit #{i} refused: {e.code().name} {e.details()}")
            if r.status != common_pb2.SUCCESS or r.tx_id != tx_id:
                sys.exit(f"Submit #{i} answered {r}")
            submitted.append(tx_id)
        print(f"submitted {len(submitted)} envelopes, all SUCCESS", flush=True)

        # Ack means ordered (committed by Raft); the block holding an envelope is cut once the
        # batch fills or times out. Follow the chain from block 0 until every tx id is seen.
        seek = orderer_pb2.SeekInfo(
            start=orderer_pb2.SeekPosition(specified=orderer_pb2.SeekSpecified(number=0)),
            stop=orderer_pb2.SeekPosition(follow=orderer_pb2.SeekFollow()),
            behavior=orderer_pb2.SeekInfo.BLOCK_UNTIL_READY,
        )
        request = envelope(common_pb2.DELIVER_SEEK_INFO, seek.SerializeToString())
        blocks, found, wanted = [], set(), set(submitted)
        stream = stub.Deliver(iter([request]), timeout=a.timeout)
        try:
            for msg in stream:
                kind = msg.WhichOneof("type")
                if kind != "block":
                    sys.exit(f"Deliver ended with status {common_pb2.Status.Name(msg.status)} "
                             f"after blocks {blocks}")
                blocks.append(msg.block.header.number)
                found.update(tx_id_of(e) for e in msg.block.data.data)
                if wanted <= found:
                    break
        except grpc.RpcError as e:
            sys.exit(f"Deliver failed after blocks {blocks}: {e.code().name} {e.details()}; "
                     f"missing {sorted(wanted - found)}")
        finally:
            stream.cancel()
        if blocks != list(range(len(blocks))):
            sys.exit(f"Deliver returned blocks out of order: {blocks}")
        missing = sorted(wanted - found)
        if missing:
            sys.exit(f"submitted tx ids missing from the delivered blocks: {missing}")
        print(f"delivered blocks 0..{blocks[-1]}, every submitted tx id found", flush=True)
        print("RESULT " + json.dumps({
            "submitted": len(submitted),
            "blocks": len(blocks),
            "found": len(submitted) - len(missing),
            "blocks_in_order": True,
        }), flush=True)


if __name__ == "__main__":
    main()
