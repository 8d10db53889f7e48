"""Test settings: the real settings module, fed an environment that points at test peers.

Values go into os.environ (not only into this module) so that the platform processes the
tests start (SMTP server, qcluster) read exactly the same configuration.
"""

import os
import tempfile

from tests.peers.ports import free_port

_data_dir = tempfile.mkdtemp(prefix="sendmsg-test-")
TEST_ENV = {
    "SENDMSG_DATA_DIR": _data_dir,
    "SENDMSG_HOSTNAME": "mta.sendmsg.test",
    "SENDMSG_RETURN_PATH_DOMAIN": "rp.sendmsg.test",
    "SENDMSG_DNS_SERVERS": f"127.0.0.1:{free_port()}",
    "SENDMSG_DNS_TIMEOUT": "3",
    "SENDMSG_RELAY_PORT": str(free_port()),
    "SENDMSG_RELAY_ALLOW_PRIVATE": "true",
    "SENDMSG_RELAY_TIMEOUT": "5",
    "SENDMSG_SUBMISSION_PORT": str(free_port()),
    "SENDMSG_SUBMISSION_TLS_PORT": str(free_port()),
    "SENDMSG_INBOUND_PORT": str(free_port()),
    "SENDMSG_SMTP_PROCESSES": "2",  # whatever the machine's cores: the forked path is tested
    "SENDMSG_WEB_PORT": str(free_port()),
    "SENDMSG_TLS_CERT": os.path.join(_data_dir, "tls", "cert.pem"),
    "SENDMSG_TLS_KEY": os.path.join(_data_dir, "tls", "key.pem"),
    # Tests change tenants, keys and domains with bulk UPDATEs and expect the very next
    # message to see it: every process reads them afresh (tests/test_throttle.py turns
    # the caches on where it tests them).
    "SENDMSG_STATE_CACHE_SECONDS": "0",
    # Test domains send from the day they are verified; tests/test_levels.py has warm-up.
    "SENDMSG_WARMUP_DAILY_CAPS": "",
}
os.environ.update(TEST_ENV)
os.environ.pop("DATABASE_URL", None)

# `make test` runs the suite twice: on SQLite, then with SENDMSG_TEST_DATABASE=postgres
# on a throwaway PostgreSQL cluster started here, before Django reads DATABASE_URL.
TEST_DATABASE = os.environ.get("SENDMSG_TEST_DATABASE", "sqlite")
if TEST_DATABASE == "postgres":
    import atexit

    from tests.peers.postgres import PostgresCluster

    _cluster = PostgresCluster()
    _cluster.start()
    atexit.register(_cluster.stop)
    os.environ["DATABASE_URL"] = _cluster.url
elif TEST_DATABASE != "sqlite":
    raise RuntimeError(f"SENDMSG_TEST_DATABASE is sqlite or postgres, not {TEST_DATABASE!r}")

from sendmsg.settings import *  # noqa: E402,F403
from sendmsg.settings import STATIC_ROOT  # noqa: E402

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins in tests
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise warns about a missing folder
