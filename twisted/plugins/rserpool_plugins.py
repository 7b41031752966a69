# twistd plugins of rserpool.  Kept tiny: twistd imports every plugin module
# to list them, so nothing heavy is imported here (the ServiceMaker imports
# rserpool.tap lazily).
from twisted.application.service import ServiceMaker

rserpool_registrar = ServiceMaker(
    "rserpool registrar",
    "rserpool.tap",
    "An RSerPool registrar (ENRP server) with TLS and PE authentication",
    "rserpool-registrar",
)
