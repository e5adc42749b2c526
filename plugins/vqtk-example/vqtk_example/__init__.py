"""Example vqtk plugin: registers the ``charbonnier`` loss."""

from vqtk import hookimpl

__version__ = "0.1.0"


@hookimpl
def vqtk_register_components(register):
    from vqtk_example.builders import CharbonnierConfig, build_charbonnier

    register("loss", "charbonnier", config=CharbonnierConfig, build=build_charbonnier)
