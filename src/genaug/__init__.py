"""genaug: does adding generated images to a small real data set make a masked autoencoder better?"""

__version__ = "0.1.0"
