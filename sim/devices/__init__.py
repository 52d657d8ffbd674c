"""The twin's Karabo middlelayer devices (registered under ``karabo.middlelayer_device``).

Modules: ``daq`` (detector, run controller, aggregators), ``pipeline`` (splitter,
correction, medium gain adjust), ``manager`` (CAL_MANAGER, INIT, appenders, ZMQ bridge),
``restart`` (RESTART), ``caldb_remote`` (calibrationDbRemote access points).  Import the
classes from their modules: importing this package does not import Karabo.
"""
