"""keras-tuner's chief/worker mode, checked before it hangs.

keras-tuner runs a search on several machines by environment variables:
`KERASTUNER_TUNER_ID` ("chief" on the machine that holds the oracle, any other
unique name on each worker), `KERASTUNER_ORACLE_IP` and `KERASTUNER_ORACLE_PORT`
(the chief's address, the same everywhere). Workers reach the chief over gRPC
and, unchecked, wait up to an hour for it without a word.
"""

import os


def role():
    """"chief", "worker" or None (not distributed), from the environment."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return None
    missing = [v for v in ("KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID")
               if not os.environ.get(v)]
    if missing:
        raise ValueError(f"KERASTUNER_ORACLE_IP is set but {' and '.join(missing)} "
                         f"{'is' if len(missing) == 1 else 'are'} not: a distributed search "
                         "needs the chief's IP and port and a tuner ID on every machine.")
    return "chief" if "chief" in os.environ["KERASTUNER_TUNER_ID"] else "worker"


def chief_address():
    return f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}"


def wait_for_chief(timeout=600):
    """On a worker, waits until the chief's gRPC server answers; a `ConnectionError` naming
    the address after `timeout` seconds. Does nothing on the chief or outside distributed
    mode."""
    if role() != "worker":
        return
    import grpc  # pylint: disable=import-outside-toplevel

    address = chief_address()
    with grpc.insecure_channel(address) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise ConnectionError(
                f"Cannot reach the keras-tuner chief at {address} "
                f"(KERASTUNER_ORACLE_IP:KERASTUNER_ORACLE_PORT) within {timeout:g} s: start "
                "the chief first (KERASTUNER_TUNER_ID=chief), or fix the address.") from None
