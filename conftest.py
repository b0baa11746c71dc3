# Tests run under eventlet, like the services (nameko's pytest plugin no longer
# patches by itself). Patched here, before any test module imports sockets.
import warnings

warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

import eventlet  # noqa: E402

eventlet.monkey_patch()
