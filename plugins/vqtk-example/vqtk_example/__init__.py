"""Example vqtk plugin: the ``charbonnier`` pixel loss and the ``drift`` discriminator regulariser."""

from vqtk import hookimpl

__version__ = "0.2.0"


@hookimpl
def vqtk_register_components(register):
    # a component's keyword-only signature is its recipe schema: registering the class is enough
    from vqtk_example.charbonnier import CharbonnierLoss
    from vqtk_example.drift import DriftPenalty

    register("loss", "charbonnier", CharbonnierLoss)
    register("loss", "drift", DriftPenalty)
