# Tests run under eventlet, like the services (nameko's pytest plugin no longer
# patches by itself). Patched here, before any test module imports sockets.
import eventlet

eventlet.monkey_patch()
