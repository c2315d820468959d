"""The rooms of one gateway process: a module per concern, each building, starting and
stopping that concern's collaborators from the settings.

``gateway.process`` composes them: it builds the rooms in the order their collaborators need
each other, hands the protocol adapters one ``Services``, and keeps the order in which rooms
start and stop. A new capability (its settings in ``gateway/settings/``) adds a room here and
a few lines of composition there, not its wiring to the process.

The rooms live here, one floor below ``process.py``, rather than each inside its concern's
package: a room wires one concern to the others (the routing room hands the fleet's membership
to the reconciler, the runtimes room gives the environment builds the tracer), and from here
every one of them is an import that runs downward.
"""
