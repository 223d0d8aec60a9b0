"""Distributed runtime of DEFT on Flower (Message API, flwr >= 1.42): Flower is only transport.

``protocol``    what server and device say in a round (``query``, ``train``) and the checks
``server``      Algorithm 1's server: the in-process engine with its network steps replaced
``device``      a node: its state, and one block's gradient with the engine's own code
``app``         the ``ServerApp`` and ``ClientApp`` objects (``deployment.write_app``: the app)
``virtual``     virtual devices on Flower's simulation runtime (Ray actors)
``deployment``  the deployment runtime on one machine (``loladeft flower local``)
``federation``  launcher of a local SuperLink + SuperNodes (TLS, node authentication on by
                default), composed of ``pki`` (certificates, node keys), ``processes``
                (supervision) and ``flwr_cli`` (the ``flwr`` command line, its TOML files)
``flower_patches``  every use of Flower internals: latency patches for flwr 1.42.x only
``supernode``, ``executor``  entry points of a node's processes (they apply the patches)

Everything but ``flower_patches`` uses only Flower's public API.
"""
