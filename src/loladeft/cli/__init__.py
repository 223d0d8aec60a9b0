"""The ``loladeft`` command line. One module per command, registered in :mod:`.app`."""
