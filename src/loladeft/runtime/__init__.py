"""Distributed runtime of DEFT on Flower (Message API, flwr 1.42): Flower is only transport.

``protocol``    what server and device say in a round (``query``, ``train``) and the checks
``server``      Algorithm 1's server: the in-process engine with its network steps replaced
``device``      a node: its state, and one block's gradient with the engine's own code
``app``         the ``ServerApp`` and ``ClientApp`` objects (``deployment.write_app``: the app)
``simulation``  the simulation runtime (Ray actors as virtual devices)
``deployment``  the deployment runtime on one machine (``loladeft flower local``)
``federation``  launcher of a local SuperLink + SuperNodes (TLS, node authentication)
``supernode``, ``executor``, ``polling``  Flower's fixed waits, and how loladeft shortens them
"""
